import type { ActionHubOptions, EventOf, HistoryPage, LifecycleEvent, LocalEvents, MediaType, PageDetails, PublishResult, Snapshot, SubscriptionInfo, TopicPattern, VisitorEvent, Where, WebchatState, ContentOfferState } from './types.mjs';
export type Action<M extends MediaType, S extends string> = {
    readonly actionId: string;
    readonly actionMediaType: M;
    readonly actionMapId: string;
    readonly actionMapVersion: number;
    errored(errorCode?: number, errorMessage?: string, data?: Record<string, unknown>): Promise<PublishResult>;
} & {
    [K in Exclude<S, 'errored'>]: (data?: Record<string, unknown>) => Promise<PublishResult>;
};
export type WebchatAction = Action<'webchat', WebchatState>;
export type ContentOfferAction = Action<'contentoffer', ContentOfferState>;
export type ActionOptions = {
    actionMapId: string;
    /**
     * Default 1.
     */
    actionMapVersion?: number;
    /**
     * Default: a new UUIDv4.
     */
    actionId?: string;
};
/** An error from the hub (its `code`) or from the SDK (`closed`, `queue_full`, ...). */
export declare class ActionHubError extends Error {
    /** @readonly */
    code: string;
    /** @type {unknown} */
    details: unknown;
    /**
     * @param {string} code the hub's protocol code, or the SDK's: `closed`, `queue_full`, `disconnected`, `handler`, `unavailable`
     * @param {string} [message]
     * @param {unknown} [details]
     */
    constructor(code: string, message?: string, details?: unknown);
}
/**
 * A random UUIDv4; works outside secure contexts, unlike crypto.randomUUID.
 * @returns {string}
 */
export declare function uuid(): string;
/**
 * A `getToken` that asks the site's token endpoint: a POST with the customerId (and the user
 * wanted, if any) as query parameters and the page's cookies, so the site's own login decides
 * which user the token may carry. The answer is `{token, expiresAt}`, as `POST /v1/tokens`'s.
 * @param {string | URL} url
 * @returns {NonNullable<ActionHubOptions['getToken']>}
 */
export declare function tokenUrlGetter(url: string | URL): NonNullable<ActionHubOptions['getToken']>;
export declare class ActionHub {
    options: ActionHubOptions;
    url: string;
    /**
     * The connection's state: `connecting`, `connected`, `disconnected` (before the first
     * connect, and waiting to reconnect) or `closed`.
     * @type {import('./types.mjs').ConnectionState}
     */
    state: import('./types.mjs').ConnectionState;
    /** @type {string | null} The hub's epoch, once connected. */
    epoch: string | null;
    /** @type {string | null} */
    connId: string | null;
    /** @type {{kind: 'open' | 'apiKey' | 'token', scopes: string[], customerId?: string, expiresAt?: string} | null} What the connection may do. */
    scope: {
        kind: 'open' | 'apiKey' | 'token';
        scopes: string[];
        customerId?: string;
        expiresAt?: string;
    } | null;
    customerId: string;
    /** @param {ActionHubOptions} [options] */
    constructor(options?: ActionHubOptions);
    /**
     * The SDK version.
     * @returns {string}
     */
    static get version(): string;
    /**
     * The current web session's id.
     * @returns {string}
     */
    get sessionId(): string;
    /** The highest seq this page has seen, or 0. */
    get seq(): number;
    /** Whether the connection is up and `connected` was received. */
    get connected(): boolean;
    /**
     * Resolves once the first connection is established.
     * @returns {Promise<void>}
     */
    ready(): Promise<void>;
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {Where} where
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {keyof LocalEvents} K
     * @overload
     * @param {K} event
     * @param {(value: LocalEvents[K]) => void} callback
     * @returns {this}
     */
    /**
     * Calls `callback` for each event matching `pattern` (and `where`), or for a local event.
     * Handlers with the same pattern and filter share one server subscription.
     * @param {any} pattern
     * @param {any} [where]
     * @param {any} [callback]
     * @returns {this}
     */
    on<P extends TopicPattern>(pattern: P | P[], callback: (event: EventOf<P>) => void): this;
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {Where} where
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {keyof LocalEvents} K
     * @overload
     * @param {K} event
     * @param {(value: LocalEvents[K]) => void} callback
     * @returns {this}
     */
    /**
     * Calls `callback` for each event matching `pattern` (and `where`), or for a local event.
     * Handlers with the same pattern and filter share one server subscription.
     * @param {any} pattern
     * @param {any} [where]
     * @param {any} [callback]
     * @returns {this}
     */
    on<P extends TopicPattern>(pattern: P | P[], where: Where, callback: (event: EventOf<P>) => void): this;
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {Where} where
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {keyof LocalEvents} K
     * @overload
     * @param {K} event
     * @param {(value: LocalEvents[K]) => void} callback
     * @returns {this}
     */
    /**
     * Calls `callback` for each event matching `pattern` (and `where`), or for a local event.
     * Handlers with the same pattern and filter share one server subscription.
     * @param {any} pattern
     * @param {any} [where]
     * @param {any} [callback]
     * @returns {this}
     */
    on<K extends keyof LocalEvents>(event: K, callback: (value: LocalEvents[K]) => void): this;
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {Where} where
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {keyof LocalEvents} K
     * @overload
     * @param {K} event
     * @param {(value: LocalEvents[K]) => void} callback
     * @returns {this}
     */
    /**
     * As `on`, for the first matching event only.
     * @param {any} pattern
     * @param {any} [where]
     * @param {any} [callback]
     * @returns {this}
     */
    once<P extends TopicPattern>(pattern: P | P[], callback: (event: EventOf<P>) => void): this;
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {Where} where
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {keyof LocalEvents} K
     * @overload
     * @param {K} event
     * @param {(value: LocalEvents[K]) => void} callback
     * @returns {this}
     */
    /**
     * As `on`, for the first matching event only.
     * @param {any} pattern
     * @param {any} [where]
     * @param {any} [callback]
     * @returns {this}
     */
    once<P extends TopicPattern>(pattern: P | P[], where: Where, callback: (event: EventOf<P>) => void): this;
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {TopicPattern} P
     * @overload
     * @param {P | P[]} pattern
     * @param {Where} where
     * @param {(event: EventOf<P>) => void} callback
     * @returns {this}
     */
    /**
     * @template {keyof LocalEvents} K
     * @overload
     * @param {K} event
     * @param {(value: LocalEvents[K]) => void} callback
     * @returns {this}
     */
    /**
     * As `on`, for the first matching event only.
     * @param {any} pattern
     * @param {any} [where]
     * @param {any} [callback]
     * @returns {this}
     */
    once<K extends keyof LocalEvents>(event: K, callback: (value: LocalEvents[K]) => void): this;
    /**
     * Removes `callback` (or every handler) of `pattern` (or of every pattern).
     * @param {TopicPattern | TopicPattern[] | keyof LocalEvents | Function} [pattern]
     * @param {Function} [callback]
     * @returns {this}
     */
    off(pattern?: TopicPattern | TopicPattern[] | keyof LocalEvents | Function, callback?: Function): this;
    /**
     * Each subscription's state: its topics and filter, `state` (`subscribing`, `subscribed`,
     * `unsubscribed`), its position `{seq, epoch}`, and for the last subscribe whether it
     * resumed (`wasRecovering`) and got everything after its position (`recovered`).
     * @returns {SubscriptionInfo[]}
     */
    subscriptions(): SubscriptionInfo[];
    /**
     * The retained history over HTTP (`GET /v1/events`), filtered like a subscription:
     * resolves `{events, next, epoch}`, each event as a handler receives it; pass `next` as
     * `since` for the following page. The HTTP API takes API keys (or open mode), not tokens.
     * @param {{topics?: TopicPattern | TopicPattern[], where?: Where, since?: number, limit?: number}} [query]
     * @returns {Promise<HistoryPage>}
     */
    history({ topics, where, since, limit }?: {
        topics?: TopicPattern | TopicPattern[];
        where?: Where;
        since?: number;
        limit?: number;
    }): Promise<HistoryPage>;
    /**
     * Publishes one event; resolves with {seq, duplicate}. Queued while offline, retried safely by eventId.
     * @param {LifecycleEvent | VisitorEvent} event
     * @returns {Promise<PublishResult>}
     */
    publish(event: LifecycleEvent | VisitorEvent): Promise<PublishResult>;
    /**
     * @overload
     * @param {'webchat'} mediaType
     * @param {ActionOptions} options
     * @returns {WebchatAction}
     */
    /**
     * @overload
     * @param {'contentoffer'} mediaType
     * @param {ActionOptions} options
     * @returns {ContentOfferAction}
     */
    /**
     * A web action of this page's customer and session, with one method per lifecycle state.
     * @param {MediaType} mediaType
     * @param {ActionOptions} options
     * @returns {any}
     */
    action(mediaType: 'webchat', options: ActionOptions): WebchatAction;
    /**
     * @overload
     * @param {'webchat'} mediaType
     * @param {ActionOptions} options
     * @returns {WebchatAction}
     */
    /**
     * @overload
     * @param {'contentoffer'} mediaType
     * @param {ActionOptions} options
     * @returns {ContentOfferAction}
     */
    /**
     * A web action of this page's customer and session, with one method per lifecycle state.
     * @param {MediaType} mediaType
     * @param {ActionOptions} options
     * @returns {any}
     */
    action(mediaType: 'contentoffer', options: ActionOptions): ContentOfferAction;
    /**
     * The site user id the current browser token vouches for (its `uid` claim), or null.
     * @returns {string | null}
     */
    get tokenUserId(): string | null;
    /**
     * Links this customer to the site's user (default: the token's `uid`).
     * @param {string | null} [userId]
     * @param {Record<string, unknown>} [traits]
     * @returns {Promise<PublishResult>}
     */
    identify(userId?: string | null, traits?: Record<string, unknown>): Promise<PublishResult>;
    /**
     * Signs in: a new session starts (the old sessionId is never reused).
     * @param {string | null} [userId]
     * @param {Record<string, unknown>} [traits]
     * @returns {Promise<PublishResult>}
     */
    signin(userId?: string | null, traits?: Record<string, unknown>): Promise<PublishResult>;
    /**
     * Signs out: ends this session; the next event starts a fresh one.
     * @returns {Promise<PublishResult>}
     */
    signout(): Promise<PublishResult>;
    /**
     * A returning visitor the site recognizes.
     * @param {string | null} [userId]
     * @param {Record<string, unknown>} [traits]
     * @returns {Promise<PublishResult>}
     */
    userinfo(userId?: string | null, traits?: Record<string, unknown>): Promise<PublishResult>;
    /**
     * A page view; url, title and referrer default to this page's.
     * @param {PageDetails & Record<string, unknown>} [details]
     * @returns {Promise<PublishResult>}
     */
    page(details?: PageDetails & Record<string, unknown>): Promise<PublishResult>;
    /**
     * The page reported last (or `url`) was left or hidden: it ends its time on page. The
     * SDK sends it by itself on `pagehide` and on `visibilitychange` to hidden.
     * @param {string} [url]
     * @returns {Promise<PublishResult>}
     */
    exit(url?: string): Promise<PublishResult>;
    /**
     * Merges attributes into this visitor's profile (the custom ones of its view), and with
     * `company` (`{id, name?, ...}`) makes it that company's.
     * @param {Record<string, unknown>} attributes
     * @param {{id: string, name?: string} & Record<string, unknown>} [company]
     * @returns {Promise<PublishResult>}
     */
    update(attributes: Record<string, unknown>, company?: {
        id: string;
        name?: string;
    } & Record<string, unknown>): Promise<PublishResult>;
    /**
     * A custom event.
     * @param {string} name
     * @param {Record<string, unknown>} [properties]
     * @returns {Promise<PublishResult>}
     */
    track(name: string, properties?: Record<string, unknown>): Promise<PublishResult>;
    /**
     * The current actions and customers matching `where` (`topics` optional).
     * @param {Where} [where]
     * @param {TopicPattern[]} [topics]
     * @returns {Promise<Snapshot>}
     */
    snapshot(where?: Where, topics?: TopicPattern[]): Promise<Snapshot>;
    /**
     * Closes the connection for good; pending publishes are rejected.
     * @returns {void}
     */
    close(): void;
    /**
     * Pushes each matching event to the data layer as `{event: name, ...fields}`. Returns a
     * function that stops it. The array is looked up at each push and never replaced, so a tag
     * manager's own `push` sees every event.
     */
    /**
     * @param {ActionHub} hub
     * @param {{patterns?: TopicPattern[], where?: Where, dataLayer?: {push(item: object): unknown}, eventName?: string | ((event: import('./types.mjs').HubEvent) => string)}} [options]
     * @returns {() => void}
     */
    static toDataLayer(hub: ActionHub, { patterns, where, dataLayer, eventName }?: {
        patterns?: TopicPattern[];
        where?: Where;
        dataLayer?: {
            push(item: object): unknown;
        };
        eventName?: string | ((event: import('./types.mjs').HubEvent) => string);
    }): () => void;
}
export declare namespace ActionHub {
    export { ActionHubError as Error };
    export { uuid };
}
export default ActionHub;
