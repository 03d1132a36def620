import type { ActionHub } from './actionhub.mjs';
export type GtObject = {
    hub: ActionHub;
    push(...commands: unknown[][]): number;
};
/**
 * A `_gt`-shaped object whose `push(...commands)` drives `hub`.
 * @param {ActionHub} hub
 * @returns {GtObject}
 */
export declare function gtCommands(hub: ActionHub): GtObject;
/**
 * Installs `_gt` as `window[name]` (unless another script owns it), reports the page entered
 * as Web Engagement's tracker does on load, then runs what the page pushed before the SDK
 * loaded, in order. Returns the `_gt` object either way.
 */
/**
 * @param {ActionHub} hub
 * @param {string} [name]
 * @param {{pageEntered?: boolean}} [options] `pageEntered: false` leaves out the page view at load
 * @returns {GtObject}
 */
export declare function installGt(hub: ActionHub, name?: string, { pageEntered }?: {
    pageEntered?: boolean;
}): GtObject;
