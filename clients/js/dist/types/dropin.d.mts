/**
 * Writes `message` to the console once per `key` on the page.
 * @param {string} key
 * @param {string} message
 * @param {'info' | 'warn'} [level]
 */
export declare function noteOnce(key: string, message: string, level?: 'info' | 'warn'): void;
/**
 * Runs one command, sending a thrown error or a rejection to the hub's error handlers.
 * @template T
 * @param {import('./actionhub.mjs').ActionHub} hub
 * @param {() => T} run
 * @returns {T | undefined}
 */
export declare function settle<T>(hub: import('./actionhub.mjs').ActionHub, run: () => T): T | undefined;
/**
 * Installs `api` as the page global `name` and returns what the stub there had queued
 * (`queued(stub)`), or null, leaving the global alone, when another script already owns it
 * (said on the console) or this SDK installed it already.
 * @param {string} name
 * @param {any} api
 * @param {(stub: any) => any[]} queued
 * @returns {any[] | null}
 */
export declare function install(name: string, api: any, queued: (stub: any) => any[]): any[] | null;
/**
 * A page view's details: `url` resolved against this page's, and `title`, when given.
 * @param {string} [url]
 * @param {string} [title]
 */
export declare function pageOf(url?: string, title?: string): {
    url?: string;
    title?: string;
};
