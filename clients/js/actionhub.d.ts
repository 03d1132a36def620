// Type declarations for the actionhub browser SDK (wire protocol v1).

/** Media types of web actions. */
export type MediaType = 'webchat' | 'contentoffer';

export type WebchatState =
  | 'qualified' | 'offered' | 'accepted' | 'started' | 'engaged' | 'ended'
  | 'rejected' | 'ignored' | 'timedout' | 'errored';
export type ContentOfferState = 'qualified' | 'offered' | 'accepted' | 'rejected' | 'ignored' | 'errored';
export type ActionState = WebchatState | ContentOfferState;

/**
 * A topic pattern `<family>:<name>`, either side may be `all`; a bare `all` is `all:all`.
 * Families: `webchat`, `contentoffer`, `visitor`, `session`.
 */
export type TopicPattern = string;

/** Subscription filter: field -> allowed values (AND across fields, OR within a list). */
export interface Where {
  customerId?: string[];
  sessionId?: string[];
  actionId?: string[];
  actionMapId?: string[];
  actionMapVersion?: number[];
  userId?: string[];
}

/** What every delivered event carries besides its published fields. */
export interface Delivered {
  /** The hub's order, strictly increasing across the hub. */
  seq: number;
  /** e.g. `webchat:offered`, `visitor:signin`. */
  topic: string;
  /** The hub's receive time, RFC 3339 with milliseconds, UTC. */
  timestamp: string;
}

/** A lifecycle report of a web action, as published. */
export interface LifecycleEvent {
  actionId: string;
  actionState: ActionState;
  actionMediaType: MediaType;
  actionMapId: string;
  actionMapVersion: number;
  customerId: string;
  customerIdType?: 'cookie';
  sessionId: string;
  errorCode?: number;
  errorMessage?: string;
  /** Idempotency key (<= 64 chars); the SDK fills one in when absent. */
  eventId?: string;
  /** Enrichment, e.g. a conversationId (<= 4 KiB as JSON). */
  data?: Record<string, unknown>;
}

export type VisitorType = 'identify' | 'signin' | 'signout' | 'userinfo' | 'page' | 'track';

/** A visitor event, as published. */
export interface VisitorEvent {
  type: VisitorType;
  customerId: string;
  sessionId?: string;
  /** Required on signin and userinfo; identify needs `userId`, `channels`, or both. */
  userId?: string;
  traits?: Record<string, unknown>;
  /** The visitor's ids on communication channels, e.g. `{ whatsapp: '10435685475' }`; each
   * names one visitor. Only on identify, signin and userinfo (refused on the others). */
  channels?: Record<string, string>;
  page?: PageDetails;
  name?: string;
  properties?: Record<string, unknown>;
  eventId?: string;
}

export interface PageDetails {
  url?: string;
  title?: string;
  referrer?: string;
  /** The browser's IANA time zone; the hub shows the newest as the visitor's `location.timezone`. */
  timezone?: string;
  [field: string]: unknown;
}

/** An event as a handler receives it: the published fields (lifecycle, visitor, or one the
 * hub made: `session:started`, `session:ended`, `visitor:merged`) plus seq, topic, timestamp. */
export type HubEvent = Delivered & Partial<LifecycleEvent> & Partial<Omit<VisitorEvent, 'type'>> & {
  type?: VisitorType;
  [field: string]: unknown;
};

export type Handler = (event: HubEvent) => void;

/** The hub's acknowledgement of a publish. */
export interface PublishResult {
  seq: number;
  /** True when the hub had already accepted this event (a safe retry). */
  duplicate: boolean;
}

export interface Snapshot {
  seq: number;
  actions: Array<LifecycleEvent & { seq: number; timestamp: string }>;
  customers: Array<{ customerId: string; identity: { state: 'anonymous' | 'recognized' | 'authenticated'; userId?: string | null } }>;
}

/** A browser token, as `POST /v1/tokens` answers it (or just the token string). */
export type TokenAnswer = string | { token: string; expiresAt?: string };

export interface ActionHubOptions {
  /** The hub: `ws(s)://host/v1/ws` or `http(s)://host`. Default: where the script came from, else this page's origin. */
  url?: string;
  /** A browser JWT for this customer. */
  token?: string;
  /**
   * Fetches a browser token from the site's backend; called before connecting, again on expiry (close 4001),
   * and with `{userId}` when `identify`/`signin`/`userinfo` name a user the current token does not carry
   * (a token links only its own `uid`): mint that token only for the user your login vouches for.
   */
  getToken?: (customerId: string, want: { userId?: string }) => TokenAnswer | Promise<TokenAnswer>;
  /** A server-side API key (never put one in a public page). */
  apiKey?: string;
  /** Overrides the cookie's customerId (UUIDv4), e.g. outside a browser. */
  customerId?: string;
  /** Overrides the stored sessionId (UUIDv4). */
  sessionId?: string;
  /** Domain attribute of the customerId cookie, to share it across subdomains. */
  cookieDomain?: string;
  /** Where the sessionId and resume cursor live. Default: sessionStorage (memory outside a browser). */
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;
  /** Publishes kept while offline; more are refused with `queue_full`. Default 100. */
  maxQueue?: number;
  /** Reconnect delay bounds in ms: doubling from `min` up to `max`, with jitter. Default 500..30000. */
  backoff?: { min?: number; max?: number };
  /** Connect at construction (default true). */
  autoConnect?: boolean;
  /** A WebSocket constructor, for environments without a global one. */
  WebSocket?: unknown;
}

/** The object `hub.action()` returns: one method per lifecycle state, each publishing it. */
export interface ActionBase<M extends MediaType> {
  readonly actionId: string;
  readonly actionMediaType: M;
  readonly actionMapId: string;
  readonly actionMapVersion: number;
  errored(errorCode?: number, errorMessage?: string, data?: Record<string, unknown>): Promise<PublishResult>;
}
type StateMethods<S extends string> = { [K in Exclude<S, 'errored'>]: (data?: Record<string, unknown>) => Promise<PublishResult> };
export type WebchatAction = ActionBase<'webchat'> & StateMethods<WebchatState>;
export type ContentOfferAction = ActionBase<'contentoffer'> & StateMethods<ContentOfferState>;

export interface ActionOptions {
  actionMapId: string;
  /** Default 1. */
  actionMapVersion?: number;
  /** Default: a new UUIDv4. */
  actionId?: string;
}

/** An error from the hub (its protocol `code`) or from the SDK: `closed`, `queue_full`, `disconnected`, `handler`, `unavailable`. */
export class ActionHubError extends Error {
  readonly code: string;
  readonly details?: unknown;
  constructor(code: string, message?: string, details?: unknown);
}

export type LocalEvent = 'error' | 'connected' | 'disconnected';

/** Snippet-style entry point: `ac('on', 'webchat:all', cb)`, `ac('page')`, ... */
export interface CommandFunction {
  (command: 'on' | 'once', pattern: TopicPattern | TopicPattern[], callback: Handler): ActionHub;
  (command: 'on' | 'once', pattern: TopicPattern | TopicPattern[], where: Where, callback: Handler): ActionHub;
  (command: 'off', pattern?: TopicPattern | TopicPattern[], callback?: Handler): ActionHub;
  (command: 'action', mediaType: MediaType, options: ActionOptions): WebchatAction | ContentOfferAction;
  (command: 'identify', userId?: string | null, traits?: Record<string, unknown>): Promise<PublishResult>;
  (command: 'signin' | 'userinfo', userId?: string | null): Promise<PublishResult>;
  (command: 'signout'): Promise<PublishResult>;
  (command: 'page', details?: PageDetails): Promise<PublishResult>;
  (command: 'track', name: string, properties?: Record<string, unknown>): Promise<PublishResult>;
  (command: 'publish', event: LifecycleEvent | VisitorEvent): Promise<PublishResult>;
  (command: 'snapshot', where?: Where): Promise<Snapshot>;
  (command: 'close'): void;
  readonly hub: ActionHub;
}

export interface DataLayerOptions {
  /** Default `['all']`. */
  patterns?: TopicPattern[];
  where?: Where;
  /** Default `window.dataLayer` (created if missing, never replaced). */
  dataLayer?: { push(item: object): unknown };
  /** The `event` name: a prefix (default `actionhub`, giving `actionhub.webchat:offered`) or a function of the event. */
  eventName?: string | ((event: HubEvent) => string);
}

export class ActionHub {
  constructor(options?: ActionHubOptions);
  static readonly version: string;
  static readonly Error: typeof ActionHubError;
  static uuid(): string;
  /** Returns the `ac` function, installs it as `window[name]` (default `ac`), and runs the calls queued on the stub's `q`. */
  static commandQueue(hub: ActionHub, name?: string): CommandFunction;
  /** Pushes each matching event to the data layer as `{event: name, ...fields}`; returns a function that stops it. */
  static toDataLayer(hub: ActionHub, options?: DataLayerOptions): () => void;

  /** The opaque id kept in the first-party cookie. */
  readonly customerId: string;
  /** This tab's web session (sessionStorage); `signin` and `signout` start a new one. */
  readonly sessionId: string;
  /** The last seq this tab has seen. */
  readonly seq: number;
  /** The hub's epoch, once connected. */
  readonly epoch: string | null;
  readonly connected: boolean;
  /** Resolves on the first connection. */
  ready(): Promise<void>;

  /** Calls `callback` for each event matching `pattern` (and `where`). Handlers with the same pattern and filter share one server subscription. */
  on(pattern: TopicPattern | TopicPattern[], callback: Handler): this;
  on(pattern: TopicPattern | TopicPattern[], where: Where, callback: Handler): this;
  on(event: 'error', callback: (error: ActionHubError) => void): this;
  on(event: 'connected', callback: (info: { connId: string; epoch: string; seq: number }) => void): this;
  on(event: 'disconnected', callback: (info: { code: number; reason: string }) => void): this;
  /** As `on`, for the first matching event only. */
  once(pattern: TopicPattern | TopicPattern[], callback: Handler): this;
  once(pattern: TopicPattern | TopicPattern[], where: Where, callback: Handler): this;
  once(event: LocalEvent, callback: (value: any) => void): this;
  /** Removes `callback` (or every handler) of `pattern` (or of every pattern). */
  off(pattern?: TopicPattern | TopicPattern[] | LocalEvent, callback?: Function): this;

  /** Publishes an event; resolves when the hub accepted it. Queued (bounded) while offline, retried safely by eventId. */
  publish(event: LifecycleEvent | VisitorEvent): Promise<PublishResult>;
  /** A web action of this page's customer and session, with one method per lifecycle state. */
  action(mediaType: 'webchat', options: ActionOptions): WebchatAction;
  action(mediaType: 'contentoffer', options: ActionOptions): ContentOfferAction;
  /** The site user id the current browser token carries (its `uid` claim), or null. */
  readonly tokenUserId: string | null;
  /** Links this customer to the site's user; `userId` defaults to the token's. */
  identify(userId?: string | null, traits?: Record<string, unknown>): Promise<PublishResult>;
  signin(userId?: string | null): Promise<PublishResult>;
  signout(): Promise<PublishResult>;
  userinfo(userId?: string | null): Promise<PublishResult>;
  /** A page view; url, title and referrer default to this page's. */
  page(details?: PageDetails): Promise<PublishResult>;
  track(name: string, properties?: Record<string, unknown>): Promise<PublishResult>;
  /** The current actions and customers matching `where`. */
  snapshot(where?: Where, topics?: TopicPattern[]): Promise<Snapshot>;
  /** Closes the connection for good; pending publishes reject with `closed`. */
  close(): void;
}

export function uuid(): string;
export default ActionHub;

declare global {
  interface Window {
    ActionHub?: typeof ActionHub;
    ac?: CommandFunction | ((...args: unknown[]) => void) & { q?: IArguments[] };
    actionhub?: ActionHub;
    dataLayer?: object[];
  }
}
