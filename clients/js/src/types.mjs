// The shapes the SDK speaks in, as JSDoc types: tsc checks the code against them and writes
// them into the package's declarations (dist/types), so the types cannot drift from the
// code. The module has no code of its own.

/** @typedef {'webchat' | 'contentoffer'} MediaType */
/** @typedef {'qualified' | 'offered' | 'accepted' | 'started' | 'engaged' | 'ended' | 'rejected' | 'ignored' | 'timedout' | 'errored'} WebchatState */
/** @typedef {'qualified' | 'offered' | 'accepted' | 'rejected' | 'ignored' | 'errored'} ContentOfferState */
/** @typedef {WebchatState | ContentOfferState} ActionState */
/** @typedef {'identify' | 'signin' | 'signout' | 'userinfo' | 'page' | 'track' | 'update' | 'exit'} VisitorType */

/**
 * Every topic the hub publishes under: `webchat:${state}`, `contentoffer:${state}`,
 * `visitor:${type}` (and `visitor:merged`), `session:started`, `session:ended`.
 * @typedef {`webchat:${WebchatState}` | `contentoffer:${ContentOfferState}` | `visitor:${VisitorType | 'merged'}` | `session:${'started' | 'ended'}`} Topic
 */

/**
 * A topic pattern: a topic, or `<family>:all`, `all:<name>`, `all` (everything).
 * @typedef {Topic | `${'webchat' | 'contentoffer' | 'visitor' | 'session'}:all` | `all:${ActionState | VisitorType | 'merged' | 'started' | 'ended'}` | 'all' | 'all:all'} TopicPattern
 */

/**
 * The topics a pattern matches.
 * @template {string} P
 * @typedef {P extends 'all' | 'all:all' ? Topic : P extends `all:${infer N}` ? Extract<Topic, `${string}:${N}`> : P extends `${infer F}:all` ? Extract<Topic, `${F}:${string}`> : Extract<Topic, P>} TopicsOf
 */

/**
 * Subscription filter: field -> allowed values (AND across fields, OR within a list).
 * @typedef {object} Where
 * @property {string[]} [customerId]
 * @property {string[]} [sessionId]
 * @property {string[]} [actionId]
 * @property {string[]} [actionMapId]
 * @property {number[]} [actionMapVersion]
 * @property {string[]} [userId]
 */

/**
 * What every delivered event carries besides its published fields.
 * @typedef {object} Delivered
 * @property {number} seq The hub's order, strictly increasing across the hub.
 * @property {string} timestamp The hub's receive time, RFC 3339 with milliseconds, UTC.
 */

/**
 * A lifecycle report of a web action, as published.
 * @typedef {object} LifecycleEvent
 * @property {string} actionId
 * @property {ActionState} actionState
 * @property {MediaType} actionMediaType
 * @property {string} actionMapId
 * @property {number} actionMapVersion
 * @property {string} customerId
 * @property {'cookie'} [customerIdType]
 * @property {string} sessionId
 * @property {number} [errorCode]
 * @property {string} [errorMessage]
 * @property {string} [eventId] Idempotency key (<= 64 chars); the SDK fills one in when absent.
 * @property {Record<string, unknown>} [data] Enrichment, e.g. a conversationId (<= 4 KiB as JSON).
 */

/**
 * @typedef {object} PageDetails
 * @property {string} [url]
 * @property {string} [title]
 * @property {string} [referrer]
 * @property {string} [timezone] The browser's IANA time zone; the hub shows the newest as
 *   the visitor's `location.timezone`.
 */

/**
 * A visitor event, as published.
 * @typedef {object} VisitorEvent
 * @property {VisitorType} type
 * @property {string} customerId
 * @property {string} [sessionId]
 * @property {string} [userId] Required on signin and userinfo; identify needs `userId`, `channels`, or both.
 * @property {Record<string, unknown>} [traits]
 * @property {Record<string, string>} [channels] The visitor's ids on communication channels; only on identify, signin and userinfo.
 * @property {PageDetails & Record<string, unknown>} [page]
 * @property {string} [name]
 * @property {Record<string, unknown>} [properties]
 * @property {Record<string, unknown>} [attributes] An update's attributes, merged into the visitor's (required on update, only there).
 * @property {{id: string, name?: string} & Record<string, unknown>} [company] The company the visitor belongs to from now on; only on identify, signin, userinfo and update.
 * @property {string} [eventId]
 */

/**
 * A web chat's lifecycle event as delivered: one member per state, so its topic and
 * `actionState` narrow together.
 * @typedef {{[S in WebchatState]: Delivered & Omit<LifecycleEvent, 'actionState' | 'actionMediaType'> & {topic: `webchat:${S}`, actionMediaType: 'webchat', actionState: S}}[WebchatState]} WebchatEvent
 */
/**
 * A content offer's lifecycle event as delivered, one member per state.
 * @typedef {{[S in ContentOfferState]: Delivered & Omit<LifecycleEvent, 'actionState' | 'actionMediaType'> & {topic: `contentoffer:${S}`, actionMediaType: 'contentoffer', actionState: S}}[ContentOfferState]} ContentOfferEvent
 */
/**
 * A visitor event as delivered, one member per type.
 * @typedef {{[V in VisitorType]: Delivered & Omit<VisitorEvent, 'type'> & {topic: `visitor:${V}`, type: V}}[VisitorType]} VisitorDelivered
 */
/**
 * The hub's own session events.
 * @typedef {Delivered & {topic: 'session:started', customerId: string, sessionId: string, userId?: string, startedAt: string}} SessionStartedEvent
 * @typedef {Delivered & {topic: 'session:ended', customerId: string, sessionId: string, userId?: string, startedAt: string, endedAt: string, durationMs: number, pagesViewed: number, reason: 'replaced' | 'signout' | 'idle'}} SessionEndedEvent
 * @typedef {Delivered & {topic: 'visitor:merged', customerId: string, visitorId?: string, userId?: string, mergedCustomerIds: string[]}} MergedEvent
 */

/**
 * An event as a handler receives it: a union discriminated by `topic`.
 * @typedef {WebchatEvent | ContentOfferEvent | VisitorDelivered | SessionStartedEvent | SessionEndedEvent | MergedEvent} HubEvent
 */

/**
 * The events a pattern delivers: `EventOf<'webchat:all'>` is `WebchatEvent`.
 * @template {string} P
 * @typedef {Extract<HubEvent, {topic: TopicsOf<P>}>} EventOf
 */

/**
 * The hub's acknowledgement of a publish.
 * @typedef {object} PublishResult
 * @property {number} seq
 * @property {boolean} duplicate True when the hub had already accepted this event (a safe retry).
 */

/**
 * @typedef {object} Snapshot
 * @property {number} seq
 * @property {Array<LifecycleEvent & {seq: number, timestamp: string}>} actions
 * @property {Array<{customerId: string, identity: {state: 'anonymous' | 'recognized' | 'authenticated', userId?: string | null}}>} customers
 */

/** A browser token, as `POST /v1/tokens` answers it (or just the token string). @typedef {string | {token: string, expiresAt?: string}} TokenAnswer */

/**
 * @typedef {object} ActionHubOptions
 * @property {string} [url] The hub: `ws(s)://host/v1/ws` or `http(s)://host`. Default: where the script came from, else this page's origin.
 * @property {string} [token] A browser JWT for this customer.
 * @property {(customerId: string, want: {userId?: string}) => TokenAnswer | Promise<TokenAnswer>} [getToken]
 *   Fetches a browser token from the site's backend: before connecting, ahead of expiry, after a 4001 close, and with `{userId}`
 *   when identify/signin/userinfo name a user the current token does not carry (mint that only for the user your login vouches for).
 * @property {string} [tokenUrl] The site's token endpoint, used when `getToken` is not given: POSTed with `customerId` (and `userId`) query parameters and the page's cookies, it answers `{token, expiresAt}`.
 * @property {string} [apiKey] A server-side API key (never put one in a public page).
 * @property {string} [customerId] Overrides the cookie's customerId (UUIDv4), e.g. outside a browser.
 * @property {string} [sessionId] Overrides the stored sessionId (UUIDv4).
 * @property {string} [cookieDomain] Domain attribute of the customerId cookie, to share it across subdomains.
 * @property {Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>} [storage] Where the sessionId and positions live. Default: sessionStorage (memory outside a browser).
 * @property {number} [maxQueue] Publishes kept while offline; more are refused with `queue_full`. Default 100.
 * @property {{min?: number, max?: number}} [backoff] Reconnect delay ceiling in ms, doubling from `min` up to `max`, full jitter below it. Default 500..30000.
 * @property {boolean} [autoConnect] Connect at construction (default true).
 * @property {boolean} [pageExits] Report an `exit` of the page last reported when it is hidden or left (default true).
 * @property {unknown} [WebSocket] A WebSocket constructor, for environments without a global one.
 */

/** @typedef {'connecting' | 'connected' | 'disconnected' | 'closed'} ConnectionState */
/** @typedef {'subscribing' | 'subscribed' | 'unsubscribed'} SubscriptionState */

/**
 * A subscription's state, as `subscriptions()` and its events give it.
 * @typedef {object} SubscriptionInfo
 * @property {string[]} topics
 * @property {Where | null} where
 * @property {SubscriptionState} state
 * @property {{seq: number, epoch: string} | null} position Where it resumes from.
 * @property {boolean} [wasRecovering] Its last subscribe resumed from a position.
 * @property {boolean} [recovered] The hub replayed everything after the position (false: a snapshot came instead).
 * @property {string} [reason] Why it is subscribing again or ended: `disconnected`, `off`, `once`, or the hub's code.
 */

/**
 * The local events and what their handlers get.
 * @typedef {object} LocalEvents
 * @property {import('./actionhub.mjs').ActionHubError} error
 * @property {{attempt: number}} connecting
 * @property {{connId: string, epoch: string, seq: number}} connected
 * @property {{code: number, reason: string, reconnect: boolean}} disconnected
 * @property {{}} closed
 * @property {SubscriptionInfo} subscribing
 * @property {SubscriptionInfo} subscribed
 * @property {SubscriptionInfo & {reason: string}} unsubscribed
 */

/**
 * @typedef {object} HistoryPage
 * @property {HubEvent[]} events
 * @property {number} next Pass as `since` for the next page.
 * @property {string} epoch
 */

export {};
