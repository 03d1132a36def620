// actionhub browser SDK: subscribe to web-action lifecycle events, report them, and feed a
// tag manager's data layer. Zero dependencies; speaks wire protocol v1 over one WebSocket.
//
// What lives where on the page:
// - a first-party cookie holds only the opaque customerId (UUIDv4, SameSite=Lax, 1 year);
// - sessionStorage holds the sessionId and each subscription's resume position {seq, epoch},
//   keyed by a hash of its topics and filter (a filter may name a user);
// - nothing else, and never personal data (userId and traits are sent, not stored).

/** @import { ActionHubOptions, EventOf, HistoryPage, LifecycleEvent, LocalEvents, MediaType, PageDetails, PublishResult, Snapshot, SubscriptionInfo, TopicPattern, VisitorEvent, Where, WebchatState, ContentOfferState } from './types.mjs' */

/**
 * The object `hub.action()` returns: one method per lifecycle state, each publishing it.
 * @template {MediaType} M
 * @template {string} S
 * @typedef {{readonly actionId: string, readonly actionMediaType: M, readonly actionMapId: string, readonly actionMapVersion: number,
 *   errored(errorCode?: number, errorMessage?: string, data?: Record<string, unknown>): Promise<PublishResult>}
 *   & {[K in Exclude<S, 'errored'>]: (data?: Record<string, unknown>) => Promise<PublishResult>}} Action
 */
/** @typedef {Action<'webchat', WebchatState>} WebchatAction */
/** @typedef {Action<'contentoffer', ContentOfferState>} ContentOfferAction */
/**
 * @typedef {object} ActionOptions
 * @property {string} actionMapId
 * @property {number} [actionMapVersion] Default 1.
 * @property {string} [actionId] Default: a new UUIDv4.
 */

const VERSION = '0.1.0';
const SUBPROTOCOL = 'actionhub.v1';
const COOKIE = 'actionhub_cid';
const SID_KEY = 'actionhub.sid';
const CURSOR_KEY = 'actionhub.cursor';
const YEAR_SECONDS = 365 * 24 * 3600;
// Remembered seqs for dedupe across overlapping subscriptions and replays.
const SEEN_LIMIT = 4096;
// A token this close to expiry is fetched anew before connecting.
const TOKEN_MARGIN_MS = 30_000;
// A live connection's token is refreshed this long before it expires (a third of what is
// left, for short-lived tokens), as docs/protocol.md advises.
const REFRESH_LEAD_MS = 60_000;
// Positions kept in sessionStorage: the most recently moved ones.
const POSITIONS_KEPT = 32;
const CONNECT_TIMEOUT_MS = 10_000;

const STATES = {
  webchat: ['qualified', 'offered', 'accepted', 'started', 'engaged', 'ended', 'rejected', 'ignored', 'timedout', 'errored'],
  contentoffer: ['qualified', 'offered', 'accepted', 'rejected', 'ignored', 'errored'],
};
// Local-only events: never a server subscription. The connection's states and each
// subscription's have an event of their own name.
const LOCAL = ['error', 'connecting', 'connected', 'disconnected', 'closed', 'subscribing', 'subscribed', 'unsubscribed'];
const WHERE_FIELDS = ['customerId', 'sessionId', 'actionId', 'actionMapId', 'actionMapVersion', 'userId'];

const hasWindow = typeof window !== 'undefined';
const hasDocument = typeof document !== 'undefined';
// The classic script remembers where it was loaded from, so the hub's address is a default.
const SCRIPT_SRC = hasDocument && document.currentScript ? /** @type {HTMLScriptElement} */ (document.currentScript).src : '';

/** An error from the hub (its `code`) or from the SDK (`closed`, `queue_full`, ...). */
export class ActionHubError extends Error {
  /**
   * @param {string} code the hub's protocol code, or the SDK's: `closed`, `queue_full`, `disconnected`, `handler`, `unavailable`
   * @param {string} [message]
   * @param {unknown} [details]
   */
  constructor(code, message, details) {
    super(message || code);
    this.name = 'ActionHubError';
    /** @readonly */
    this.code = code;
    /** @type {unknown} */
    this.details = details;
    if (details === undefined) delete this.details;
  }
}

/**
 * A random UUIDv4; works outside secure contexts, unlike crypto.randomUUID.
 * @returns {string}
 */
export function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function memoryStore() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), removeItem: (k) => m.delete(k) };
}

function sessionStore() {
  try {
    const s = window.sessionStorage;
    s.setItem('actionhub.probe', '1');
    s.removeItem('actionhub.probe');
    return s;
  } catch {
    return memoryStore();
  }
}

function readCookie(name) {
  if (!hasDocument) return null;
  const hit = document.cookie.split('; ').find((c) => c.startsWith(name + '='));
  return hit ? decodeURIComponent(hit.slice(name.length + 1)) : null;
}

function writeCookie(name, value, domain) {
  if (!hasDocument) return;
  let c = `${name}=${value}; Path=/; Max-Age=${YEAR_SECONDS}; SameSite=Lax`;
  if (domain) c += `; Domain=${domain}`;
  if (location.protocol === 'https:') c += '; Secure';
  document.cookie = c;
}

/** `ws(s)://host/v1/ws` from any of: a ws(s) URL, an http(s) origin, or nothing (this page). */
function wsUrl(url) {
  const base = SCRIPT_SRC || (hasWindow ? location.href : 'http://127.0.0.1/');
  const u = new URL(url || '/v1/ws', base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.pathname === '/') u.pathname = '/v1/ws';
  return u.href;
}

function parsePattern(p) {
  const [family, name = 'all'] = String(p).split(':');
  return [family, name];
}

function topicMatches(patterns, topic) {
  const [tf, tn] = topic.split(':');
  return patterns.some((p) => {
    const [f, n] = parsePattern(p);
    return (f === 'all' || f === tf) && (n === 'all' || n === tn);
  });
}

// A short stable name for a subscription's key, so what is stored names no user.
function hashKey(key) {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(36);
}

function norm(v) {
  return typeof v === 'string' ? v.toLowerCase() : v;
}

// The claims of a JWT, read without verifying it (the hub verifies); {} when unreadable.
function jwtClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part));
    return claims && typeof claims === 'object' ? claims : {};
  } catch {
    return {};
  }
}

function jwtExpiry(token) {
  const exp = jwtClaims(token).exp;
  return typeof exp === 'number' ? exp * 1000 : Infinity;
}

function tokenAnswer(t) {
  return t && typeof t === 'object' ? t.token : t;
}

/**
 * A `getToken` that asks the site's token endpoint: a POST with the customerId (and the user
 * wanted, if any) as query parameters and the page's cookies, so the site's own login decides
 * which user the token may carry. The answer is `{token, expiresAt}`, as `POST /v1/tokens`'s.
 * @param {string | URL} url
 * @returns {NonNullable<ActionHubOptions['getToken']>}
 */
export function tokenUrlGetter(url) {
  return async (customerId, want = {}) => {
    const u = new URL(url, hasWindow ? location.href : undefined);
    u.searchParams.set('customerId', customerId);
    if (want.userId) u.searchParams.set('userId', want.userId);
    const r = await fetch(u, { method: 'POST', credentials: 'include', cache: 'no-store' });
    if (!r.ok) throw new ActionHubError('unauthorized', `the token URL answered ${r.status}`);
    return r.json();
  };
}

function pageDetails() {
  if (!hasDocument) return {};
  const p = { url: location.href, title: document.title };
  if (document.referrer) p.referrer = document.referrer;
  // The visitor's time zone for its profile (`location.timezone`); never an address.
  const zone = globalThis.Intl?.DateTimeFormat?.().resolvedOptions().timeZone;
  if (zone) p.timezone = zone;
  return p;
}

export class ActionHub {
  /** @param {ActionHubOptions} [options] */
  constructor(options = {}) {
    if (options.tokenUrl && !options.getToken) options = { ...options, getToken: tokenUrlGetter(options.tokenUrl) };
    this.options = options;
    this.url = wsUrl(options.url);
    this._token = options.token || null;
    this._tokenFetch = null; // the token fetch in flight, if any
    this._connToken = null; // the token the live connection uses
    this._store = options.storage || (hasWindow ? sessionStore() : memoryStore());
    this._groups = new Map(); // key -> group: {key, patterns, where, sub, handlers: []}
    this._subs = new Map(); // server sub id -> group
    this._local = new Map(); // local event name -> Set of callbacks
    this._pending = new Map(); // frame id -> {resolve, reject, frame, publish}
    this._queue = []; // publish entries waiting for a connection (or for a user's token)
    this._holding = 0; // user tokens being fetched: publishes queue behind them, in order
    this._seen = new Set();
    this._users = new Map(); // customerId -> userId, learned from events, for `where.userId`
    this._nextId = 1;
    this._waiters = []; // resolved at the next `connected`
    this._fromSnapshots = new Set();
    this._attempt = 0;
    this._closed = false;
    this._ws = null;
    this._live = false;
    this._cursor = null; // the highest {seq, epoch} this page has seen
    /**
     * The connection's state: `connecting`, `connected`, `disconnected` (before the first
     * connect, and waiting to reconnect) or `closed`.
     * @type {import('./types.mjs').ConnectionState}
     */
    this.state = 'disconnected';
    /** @type {string | null} The hub's epoch, once connected. */
    this.epoch = null;
    /** @type {string | null} */
    this.connId = null;
    /** @type {{kind: 'open' | 'apiKey' | 'token', scopes: string[], customerId?: string, expiresAt?: string} | null} What the connection may do. */
    this.scope = null;

    // Identity: the cookie's opaque customerId, the tab's sessionId.
    let cid = options.customerId || readCookie(COOKIE);
    if (!cid || !UUID_RE.test(cid)) cid = uuid();
    writeCookie(COOKIE, cid, options.cookieDomain);
    this.customerId = cid;
    let sid = options.sessionId || this._store.getItem(SID_KEY);
    if (!sid || !UUID_RE.test(sid)) sid = uuid();
    this._setSession(sid);
    try {
      const stored = JSON.parse(this._store.getItem(CURSOR_KEY) || 'null');
      // Earlier releases kept one {seq, epoch} for the tab; a position per subscription replaces it.
      this._positions = stored && typeof stored === 'object' && !('seq' in stored) ? stored : {};
    } catch {
      this._positions = {};
    }

    this._tokenUser = this.tokenUserId; // the user a fetched token is asked for
    this._ready = new Promise((resolve) => (this._resolveReady = resolve));
    if (hasWindow && window.addEventListener) {
      this._online = () => this._ws || this._reconnectNow();
      window.addEventListener('online', this._online);
    }
    // Page exits: the page last reported is left when it is hidden or unloaded, so the
    // hub measures its time on page (the open socket carries it: the SDK has no HTTP
    // path a browser token may publish on). `pageExits: false` turns it off.
    this._pageUrl = null;
    if (hasDocument && hasWindow && window.addEventListener && options.pageExits !== false) {
      this._hidden = () => document.visibilityState === 'hidden' && this._leave();
      this._pagehide = () => this._leave();
      document.addEventListener('visibilitychange', this._hidden);
      window.addEventListener('pagehide', this._pagehide);
    }
    // Connecting starts after the constructor's caller has attached its handlers, so they
    // see `connecting` too.
    if (options.autoConnect !== false) Promise.resolve().then(() => this._connect());
  }

  /**
   * The SDK version.
   * @returns {string}
   */
  static get version() {
    return VERSION;
  }

  /**
   * The current web session's id.
   * @returns {string}
   */
  get sessionId() {
    return this._sid;
  }

  /** The highest seq this page has seen, or 0. */
  get seq() {
    return this._cursor ? this._cursor.seq : 0;
  }

  /** Whether the connection is up and `connected` was received. */
  get connected() {
    return this._live;
  }

  /**
   * Resolves once the first connection is established.
   * @returns {Promise<void>}
   */
  ready() {
    return this._ready;
  }

  // ---- subscriptions -------------------------------------------------------------------

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
  on(pattern, where, callback) {
    return this._add(pattern, where, callback, false);
  }

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
  once(pattern, where, callback) {
    return this._add(pattern, where, callback, true);
  }

  /**
   * Removes `callback` (or every handler) of `pattern` (or of every pattern).
   * @param {TopicPattern | TopicPattern[] | keyof LocalEvents | Function} [pattern]
   * @param {Function} [callback]
   * @returns {this}
   */
  off(pattern, callback) {
    if (typeof pattern === 'function') [pattern, callback] = [undefined, pattern];
    if (LOCAL.includes(/** @type {any} */ (pattern))) {
      const set = this._local.get(pattern);
      if (set) for (const cb of [...set]) if (!callback || cb === callback || cb.original === callback) set.delete(cb);
      return this;
    }
    const key = pattern === undefined ? null : [].concat(pattern).join(',');
    for (const g of [...this._groups.values()]) {
      if (key !== null && g.patterns.join(',') !== key) continue;
      g.handlers = g.handlers.filter((h) => callback && h.callback !== callback);
      if (!g.handlers.length) this._dropGroup(g);
    }
    return this;
  }

  /**
   * Each subscription's state: its topics and filter, `state` (`subscribing`, `subscribed`,
   * `unsubscribed`), its position `{seq, epoch}`, and for the last subscribe whether it
   * resumed (`wasRecovering`) and got everything after its position (`recovered`).
   * @returns {SubscriptionInfo[]}
   */
  subscriptions() {
    return [...this._groups.values()].map((g) => this._info(g));
  }

  _info(g) {
    const { patterns: topics, where, state, pos, wasRecovering, recovered } = g;
    return { topics, where, state, position: pos, wasRecovering, recovered };
  }

  _setSubState(g, state, extra) {
    g.state = state;
    this._emitLocal(state, { ...this._info(g), ...extra });
  }

  _add(pattern, where, callback, once) {
    if (typeof where === 'function') [where, callback] = [undefined, where];
    if (typeof callback !== 'function') throw new TypeError('actionhub: a callback function is required');
    if (LOCAL.includes(pattern)) {
      let set = this._local.get(pattern);
      if (!set) this._local.set(pattern, (set = new Set()));
      const cb = once ? (x) => (set.delete(cb), callback(x)) : callback;
      cb.original = callback;
      set.add(cb);
      return this;
    }
    const patterns = [].concat(pattern).map(String);
    const key = patterns.join(',') + '|' + (where ? JSON.stringify(where) : '');
    let g = this._groups.get(key);
    if (!g) {
      const id = hashKey(key);
      const pos = this._positions[id];
      g = { key, id, patterns, where: where || null, sub: null, handlers: [], pos: pos && pos.seq >= 0 && pos.epoch ? pos : null, order: 0 };
      this._groups.set(key, g);
      this._setSubState(g, 'subscribing');
      if (this._live) this._subscribe(g);
    }
    g.handlers.push({ callback, once });
    return this;
  }

  // A subscription the page ended (or the hub refused) forgets its position: a later `on`
  // of the same topics starts afresh instead of replaying what it missed meanwhile.
  _dropGroup(g, reason = 'off') {
    this._groups.delete(g.key);
    if (g.sub !== null) {
      this._subs.delete(g.sub);
      if (this._live) this._send({ op: 'unsubscribe', sub: g.sub });
      g.sub = null;
    }
    delete this._positions[g.id];
    this._savePositions();
    this._setSubState(g, 'unsubscribed', { reason });
  }

  // A subscription with a position resumes from it: the hub replays what followed, or, when
  // it cannot (history gone, another epoch), says `recovered: false` and sends a snapshot.
  // Until its replay is known to be over (`catching`), only events no other subscription
  // could have carried move its position: another one's live events may be ahead of it.
  // The hub runs a connection's replays one at a time in subscribe order, so an event of
  // this replay also says every replay subscribed before it is over.
  _subscribe(g) {
    const sub = this._nextId++;
    g.sub = sub;
    g.order = sub;
    g.horizon = this._latest;
    this._subs.set(sub, g);
    const frame = { op: 'subscribe', sub, topics: g.patterns };
    if (g.where) frame.where = g.where;
    g.wasRecovering = !!g.pos;
    g.recovered = undefined;
    g.catching = g.wasRecovering;
    if (g.pos) {
      frame.since = g.pos.seq;
      frame.epoch = g.pos.epoch;
      frame.snapshot = true;
    }
    g.resumeFrom = g.pos;
    this._request(frame).then(
      (reply) => {
        if (g.sub !== sub) return;
        if (g.wasRecovering) g.recovered = reply.recovered === true;
        else this._move(g, reply.seq);
        this._advance(reply.seq);
        this._setSubState(g, 'subscribed');
      },
      (err) => {
        if (err.code === 'closed' || err.code === 'disconnected') return;
        this._dropGroup(g, err.code);
        this._emitError(err);
      },
    );
  }

  /** Moves a subscription's position forward to `seq` of the current epoch, and stores it. */
  _move(g, seq) {
    if (typeof seq !== 'number' || !this.epoch) return;
    if (g.pos && g.pos.epoch === this.epoch && g.pos.seq >= seq) return;
    g.pos = { seq, epoch: this.epoch };
    this._positions[g.id] = g.pos;
    this._savePositions();
  }

  _savePositions() {
    const ids = Object.keys(this._positions);
    // Bounded: the positions of live subscriptions first, then the newest others.
    if (ids.length > POSITIONS_KEPT) {
      const keep = new Set([...this._groups.values()].map((g) => g.id));
      for (const id of ids) if (!keep.has(id) && Object.keys(this._positions).length > POSITIONS_KEPT) delete this._positions[id];
    }
    try {
      this._store.setItem(CURSOR_KEY, JSON.stringify(this._positions));
    } catch {
      /* storage full or blocked: resume still works within this page */
    }
  }

  /**
   * The retained history over HTTP (`GET /v1/events`), filtered like a subscription:
   * resolves `{events, next, epoch}`, each event as a handler receives it; pass `next` as
   * `since` for the following page. The HTTP API takes API keys (or open mode), not tokens.
   * @param {{topics?: TopicPattern | TopicPattern[], where?: Where, since?: number, limit?: number}} [query]
   * @returns {Promise<HistoryPage>}
   */
  async history({ topics, where, since, limit } = {}) {
    const u = new URL(this.url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    u.pathname = '/v1/events';
    if (since !== undefined) u.searchParams.set('since', String(since));
    if (limit !== undefined) u.searchParams.set('limit', String(limit));
    if (topics) u.searchParams.set('topics', [].concat(topics).join(','));
    if (where) u.searchParams.set('where', JSON.stringify(where));
    const headers = this.options.apiKey ? { 'x-api-key': this.options.apiKey } : {};
    const r = await fetch(u, { headers });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = body.error || {};
      throw new ActionHubError(e.code || 'unavailable', e.message || `GET /v1/events answered ${r.status}`, e.details);
    }
    return { events: body.events.map((f) => f.event), next: body.next, epoch: body.epoch };
  }

  // ---- publishing ----------------------------------------------------------------------

  /**
   * Publishes one event; resolves with {seq, duplicate}. Queued while offline, retried safely by eventId.
   * @param {LifecycleEvent | VisitorEvent} event
   * @returns {Promise<PublishResult>}
   */
  publish(event) {
    if (this._closed) return Promise.reject(new ActionHubError('closed', 'the hub client is closed'));
    if (!event || typeof event !== 'object') return Promise.reject(new ActionHubError('invalid_event', 'an event must be an object'));
    const ev = { ...event };
    if (!ev.eventId) ev.eventId = uuid(); // makes retries after a lost connection safe
    return new Promise((resolve, reject) => {
      const entry = { frame: { op: 'publish', event: ev }, resolve, reject };
      if (this._live && !this._holding) return this._sendEntry(entry);
      const max = this.options.maxQueue ?? 100;
      if (this._queue.length >= max) {
        return reject(new ActionHubError('queue_full', `the offline publish queue holds at most ${max} events`));
      }
      this._queue.push(entry);
    });
  }

  _base(extra) {
    return { customerId: this.customerId, sessionId: this._sid, ...extra };
  }

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
  action(mediaType, { actionMapId, actionMapVersion = 1, actionId = uuid() } = /** @type {any} */ ({})) {
    const states = STATES[mediaType];
    if (!states) throw new ActionHubError('invalid_event', `unknown media type ${JSON.stringify(mediaType)}; use webchat or contentoffer`);
    /** @type {any} */
    const action = { actionId, actionMediaType: mediaType, actionMapId, actionMapVersion };
    for (const state of states) {
      action[state] =
        state === 'errored'
          ? (errorCode, errorMessage, data) => this._report(action, state, data, { errorCode, errorMessage })
          : (data) => this._report(action, state, data);
    }
    return action;
  }

  _report(action, actionState, data, extra) {
    const ev = this._base({
      actionId: action.actionId,
      actionState,
      actionMediaType: action.actionMediaType,
      actionMapId: action.actionMapId,
      actionMapVersion: action.actionMapVersion,
      customerIdType: 'cookie',
    });
    if (extra) {
      if (extra.errorCode !== undefined) ev.errorCode = extra.errorCode;
      if (extra.errorMessage !== undefined) ev.errorMessage = extra.errorMessage;
    }
    if (data !== undefined) ev.data = data;
    return this.publish(ev);
  }

  _visitor(type, fields) {
    return this.publish(this._base({ type, ...fields }));
  }

  /**
   * The site user id the current browser token vouches for (its `uid` claim), or null.
   * @returns {string | null}
   */
  get tokenUserId() {
    const uid = this._token ? jwtClaims(this._token).uid : undefined;
    return typeof uid === 'string' ? uid : null;
  }

  // identify, signin and userinfo link this customer to a user. A token connection may
  // link only its token's `uid` (the hub refuses any other with `forbidden`), so a userId
  // left out means the token's, and one the token does not carry is first asked of
  // `getToken(customerId, {userId})` and swapped in (`refresh`) before the event leaves;
  // publishes made meanwhile wait behind it, so the order the page called them in holds.
  _link(type, userId, fields) {
    if (userId === undefined || userId === null) userId = this.tokenUserId;
    if (this.options.getToken && userId !== this.tokenUserId) {
      this._hold(this._fetchToken(userId).then(() => this._awaitToken()));
    }
    return this._visitor(type, { userId, ...fields });
  }

  // Publishes wait (queued, in order) until `work` settles, then go out with its outcome
  // in force; a failure is reported, and the events still go (the hub answers them).
  _hold(work) {
    this._holding++;
    work
      .then(() => this._refreshToken())
      .catch((e) => this._emitError(e instanceof ActionHubError ? e : new ActionHubError('unavailable', String(e && e.message ? e.message : e))))
      .finally(() => {
        this._holding--;
        if (this._live && !this._holding) this._sendQueued();
      });
  }

  // One token fetch at a time is current: a later one supersedes an earlier (whose answer
  // is dropped), so the token in force is always the one last asked for.
  _fetchToken(userId) {
    const fetch = Promise.resolve()
      .then(() => this.options.getToken(this.customerId, userId ? { userId } : {}))
      .then(
        (t) => {
          if (this._tokenFetch !== fetch) return;
          this._tokenFetch = null;
          this._token = tokenAnswer(t) || null;
          this._tokenUser = userId || null;
        },
        (e) => {
          if (this._tokenFetch === fetch) this._tokenFetch = null;
          throw e;
        },
      );
    this._tokenFetch = fetch;
    return fetch;
  }

  /** Resolves once no token fetch is in flight (an error of a superseded one is not ours). */
  async _awaitToken() {
    while (this._tokenFetch) await this._tokenFetch.catch(() => {});
  }

  /** Swaps the live connection's token for the current one when they differ. */
  async _refreshToken() {
    if (!this._live || !this._token || this._connToken === this._token) return;
    const token = this._token;
    const reply = await this._request({ op: 'refresh', token });
    this._connToken = token;
    this._planRefresh(reply.expiresAt);
  }

  /**
   * Links this customer to the site's user (default: the token's `uid`).
   * @param {string | null} [userId]
   * @param {Record<string, unknown>} [traits]
   * @returns {Promise<PublishResult>}
   */
  identify(userId, traits) {
    return this._link('identify', userId, traits ? { traits } : {});
  }

  /**
   * Signs in: a new session starts (the old sessionId is never reused).
   * @param {string | null} [userId]
   * @param {Record<string, unknown>} [traits]
   * @returns {Promise<PublishResult>}
   */
  signin(userId, traits) {
    this._setSession(uuid());
    return this._link('signin', userId, traits ? { traits } : {});
  }

  /**
   * Signs out: ends this session; the next event starts a fresh one.
   * @returns {Promise<PublishResult>}
   */
  signout() {
    const p = this._visitor('signout', {});
    this._setSession(uuid());
    return p;
  }

  /**
   * A returning visitor the site recognizes.
   * @param {string | null} [userId]
   * @param {Record<string, unknown>} [traits]
   * @returns {Promise<PublishResult>}
   */
  userinfo(userId, traits) {
    return this._link('userinfo', userId, traits ? { traits } : {});
  }

  /**
   * A page view; url, title and referrer default to this page's.
   * @param {PageDetails & Record<string, unknown>} [details]
   * @returns {Promise<PublishResult>}
   */
  page(details) {
    const page = { ...pageDetails(), ...details };
    if (typeof page.url === 'string') this._pageUrl = page.url;
    return this._visitor('page', { page });
  }

  /**
   * The page reported last (or `url`) was left or hidden: it ends its time on page. The
   * SDK sends it by itself on `pagehide` and on `visibilitychange` to hidden.
   * @param {string} [url]
   * @returns {Promise<PublishResult>}
   */
  exit(url) {
    return this._visitor('exit', { page: { url: url || this._pageUrl || (hasDocument ? location.href : '') } });
  }

  // Reports the exit of the page reported last, if any; a failure (a closed client, a
  // full queue) is nobody's to handle as the page goes away.
  _leave() {
    if (this._pageUrl && !this._closed) this.exit(this._pageUrl).catch(() => {});
  }

  /**
   * Merges attributes into this visitor's profile (the custom ones of its view), and with
   * `company` (`{id, name?, ...}`) makes it that company's.
   * @param {Record<string, unknown>} attributes
   * @param {{id: string, name?: string} & Record<string, unknown>} [company]
   * @returns {Promise<PublishResult>}
   */
  update(attributes, company) {
    return this._visitor('update', company ? { attributes, company } : { attributes });
  }

  /**
   * A custom event.
   * @param {string} name
   * @param {Record<string, unknown>} [properties]
   * @returns {Promise<PublishResult>}
   */
  track(name, properties) {
    return this._visitor('track', properties ? { name, properties } : { name });
  }

  /**
   * The current actions and customers matching `where` (`topics` optional).
   * @param {Where} [where]
   * @param {TopicPattern[]} [topics]
   * @returns {Promise<Snapshot>}
   */
  snapshot(where, topics = ['all']) {
    const sub = 'snap-' + this._nextId++;
    return new Promise((resolve, reject) => {
      const run = () => {
        const frame = { op: 'subscribe', sub, topics: [].concat(topics), snapshot: true };
        if (where) frame.where = where;
        this._snapshots = this._snapshots || new Map();
        // A big snapshot comes in chunks sharing one seq; every chunk but the last says `more`.
        const actions = [];
        const customers = [];
        this._snapshots.set(sub, (snap) => {
          actions.push(...(snap.actions || []));
          customers.push(...(snap.customers || []));
          if (snap.more) return;
          this._snapshots.delete(sub);
          this._send({ op: 'unsubscribe', sub });
          resolve({ seq: snap.seq, actions, customers });
        });
        this._request(frame).catch((e) => {
          this._snapshots.delete(sub);
          reject(e);
        });
      };
      if (this._closed) reject(new ActionHubError('closed', 'the hub client is closed'));
      else if (this._live) run();
      else this._waiters.push(run);
    });
  }

  /**
   * Closes the connection for good; pending publishes are rejected.
   * @returns {void}
   */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._refreshTimer);
    if (hasWindow && this._online) window.removeEventListener('online', this._online);
    if (this._hidden) document.removeEventListener('visibilitychange', this._hidden);
    if (this._pagehide) window.removeEventListener('pagehide', this._pagehide);
    const err = new ActionHubError('closed', 'the hub client is closed');
    for (const e of this._queue) e.reject(err);
    this._queue = [];
    for (const p of this._pending.values()) p.reject(err);
    this._pending.clear();
    if (this._ws) this._ws.close(1000, 'closed by the page');
    this._ws = null;
    this._live = false;
    this._setState('closed', {});
  }

  _setState(state, info) {
    this.state = state;
    this._emitLocal(state, info);
  }

  // ---- the connection ------------------------------------------------------------------

  async _connect() {
    if (this._closed || this._ws || this.state === 'connecting') return;
    const o = this.options;
    let ws;
    this._setState('connecting', { attempt: this._attempt });
    try {
      if (o.getToken && !this._tokenFetch && (!this._token || jwtExpiry(this._token) - Date.now() < TOKEN_MARGIN_MS)) {
        this._fetchToken(this._tokenUser);
      }
      if (this._tokenFetch) {
        await this._tokenFetch;
        await this._awaitToken();
      }
      if (this._closed) return;
      const WS = /** @type {typeof WebSocket} */ (o.WebSocket || globalThis.WebSocket);
      if (!WS) throw new ActionHubError('unavailable', 'no WebSocket implementation (Node 20 needs --experimental-websocket)');
      ws = new WS(this.url, SUBPROTOCOL);
    } catch (e) {
      this._emitError(e instanceof ActionHubError ? e : new ActionHubError('unavailable', String(e && e.message ? e.message : e)));
      if (this._closed) return;
      this._setState('disconnected', { code: 0, reason: 'no token or socket', reconnect: true });
      return this._scheduleReconnect();
    }
    this._ws = ws;
    const timer = setTimeout(() => ws.readyState <= 1 && ws.close(4000, 'connect timed out'), CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      const frame = { op: 'connect', client: { name: 'actionhub-js', version: VERSION } };
      if (this._token) frame.token = this._token;
      else if (o.apiKey) frame.apiKey = o.apiKey;
      this._connToken = this._token;
      this._request(frame, ws).then((reply) => {
        clearTimeout(timer);
        this._onConnected(reply);
      }, () => {});
    };
    ws.onmessage = (m) => this._onFrame(m.data);
    ws.onclose = (e) => {
      clearTimeout(timer);
      if (this._ws === ws) this._onClose(e.code, e.reason);
    };
    ws.onerror = () => {}; // the close that follows says what happened
  }

  _onConnected(reply) {
    this._live = true;
    this._attempt = 0;
    this._fromSnapshots = new Set();
    this.connId = reply.connId;
    if (this.epoch && this.epoch !== reply.epoch) {
      // A different history: its seqs are not comparable with the ones seen.
      this._seen.clear();
      this._cursor = null;
    }
    this.epoch = reply.epoch;
    this.scope = reply.scope;
    this._latest = reply.seq;
    for (const g of this._groups.values()) this._subscribe(g);
    // A user's token that arrived while connecting is swapped in before the queue leaves.
    if (this._token !== this._connToken) this._hold(Promise.resolve());
    else if (!this._holding) this._sendQueued();
    this._planRefresh(reply.scope && reply.scope.expiresAt);
    this._resolveReady(undefined);
    for (const w of this._waiters.splice(0)) w();
    this._setState('connected', { connId: reply.connId, epoch: reply.epoch, seq: reply.seq });
  }

  // A token connection refreshes its token ahead of `expiresAt`, on the same socket, so a
  // token's end never costs a reconnect. A refresh that fails is tried again (backoff)
  // until the token expires; then the hub closes with 4001 and the reconnect fetches one.
  _planRefresh(expiresAt) {
    clearTimeout(this._refreshTimer);
    const until = Date.parse(expiresAt) - Date.now();
    if (!this.options.getToken || !(until > 0)) return;
    const wait = until - Math.min(REFRESH_LEAD_MS, until / 3);
    this._refreshTimer = setTimeout(() => this._refreshAhead(expiresAt, 0), wait);
  }

  _refreshAhead(expiresAt, attempt) {
    if (!this._live || this._closed) return;
    const ws = this._ws;
    const fetched = this._tokenFetch || this._fetchToken(this._tokenUser);
    fetched
      .then(() => this._awaitToken())
      .then(() => this._refreshToken())
      .then(undefined, (e) => {
        if (this._ws !== ws || this._closed) return;
        this._emitError(e instanceof ActionHubError ? e : new ActionHubError('unauthorized', String(e && e.message)));
        const retry = Math.min(30_000, 1000 * 2 ** attempt);
        if (Date.now() + retry < Date.parse(expiresAt)) this._refreshTimer = setTimeout(() => this._refreshAhead(expiresAt, attempt + 1), retry);
      });
  }

  _onClose(code, reason) {
    const wasLive = this._live;
    this._ws = null;
    this._live = false;
    clearTimeout(this._refreshTimer);
    const final = (code === 4001 && !this.options.getToken) || code === 4003;
    if (!this._closed && (wasLive || this.state !== 'disconnected')) this._setState('disconnected', { code, reason, reconnect: !final });
    for (const g of this._groups.values()) {
      g.sub = null;
      if (g.state !== 'subscribing') this._setSubState(g, 'subscribing', { reason: 'disconnected' });
    }
    this._subs.clear();
    // Publishes in flight go back to the front of the queue, in order: their eventIds make
    // the retry safe. Other requests fail; subscriptions are redone on reconnect.
    const retry = [];
    for (const p of this._pending.values()) {
      if (p.publish) retry.push(p);
      else p.reject(new ActionHubError('disconnected', 'the connection closed'));
    }
    this._pending.clear();
    this._queue = retry.concat(this._queue);
    if (this._closed) return;
    if (code === 4001 && this.options.getToken) {
      this._token = null; // expired or revoked: fetch a new one
    } else if (final) {
      const err = new ActionHubError(code === 4001 ? 'unauthorized' : 'forbidden', reason || 'the hub refused this client');
      this._emitError(err);
      return this.close();
    }
    this._scheduleReconnect();
  }

  // Full jitter (a delay anywhere from 0 to the doubling ceiling): clients cut off together
  // by a restart spread out over the whole window instead of returning in a wave.
  _scheduleReconnect() {
    if (this._closed) return;
    const { min = 500, max = 30_000 } = this.options.backoff || {};
    const ceiling = Math.min(max, min * 2 ** this._attempt++);
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._connect(), Math.random() * ceiling);
  }

  _reconnectNow() {
    if (this._closed || this._ws) return;
    clearTimeout(this._timer);
    this._connect();
  }

  _send(frame, ws = this._ws) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(frame));
  }

  _request(frame, ws) {
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      this._send({ ...frame, id }, ws);
    });
  }

  _sendQueued() {
    const queued = this._queue;
    this._queue = [];
    for (const e of queued) this._sendEntry(e);
  }

  _sendEntry(entry) {
    const id = this._nextId++;
    this._pending.set(id, { ...entry, publish: true });
    this._send({ ...entry.frame, id });
  }

  // ---- incoming frames -----------------------------------------------------------------

  _onFrame(text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return this._emitError(new ActionHubError('bad_frame', 'the hub sent a frame that is not JSON'));
    }
    if (f.type === 'event') return this._onEvent(f.event);
    if (f.type === 'snapshot') return this._onSnapshot(f);
    const p = f.id !== undefined ? this._pending.get(f.id) : undefined;
    if (p) this._pending.delete(f.id);
    if (f.type === 'error') {
      const err = new ActionHubError(f.code, f.message, f.details);
      return p ? p.reject(err) : this._emitError(err);
    }
    if (!p) return;
    if (f.type === 'published') p.resolve({ seq: f.seq, duplicate: f.duplicate });
    else p.resolve(f);
  }

  _onSnapshot(f) {
    const one = this._snapshots && this._snapshots.get(f.sub);
    if (one) return one(f);
    for (const c of f.customers || []) if (c.identity && c.identity.userId) this._users.set(c.customerId, c.identity.userId);
    const g = this._subs.get(f.sub);
    if (!g) return;
    // Not recovered: deliver each action's current state that this tab has not seen.
    const from = g.resumeFrom;
    const sameEpoch = from && from.epoch === this.epoch;
    const actions = (f.actions || []).slice().sort((a, b) => a.seq - b.seq);
    for (const a of actions) {
      // Seen live, or already delivered by another subscription's snapshot on this connection.
      if ((sameEpoch && a.seq <= from.seq) || (this._seen.has(a.seq) && !this._fromSnapshots.has(a.seq))) continue;
      this._remember(a.seq);
      this._fromSnapshots.add(a.seq);
      this._dispatch({ ...a, topic: `${a.actionMediaType}:${a.actionState}` }, [g]);
    }
    // The position moves only once the last chunk is in, so a resume never skips the rest.
    if (!f.more) {
      this._move(g, f.seq);
      this._advance(f.seq);
    }
  }

  _remember(seq) {
    this._seen.add(seq);
    if (this._seen.size > SEEN_LIMIT) this._seen.delete(this._seen.values().next().value);
  }

  _onEvent(ev) {
    if (!ev || typeof ev.seq !== 'number') return;
    if (!(this._latest >= ev.seq)) this._latest = ev.seq;
    if (this._seen.has(ev.seq)) return;
    this._remember(ev.seq);
    if (ev.userId && ev.customerId) this._users.set(ev.customerId, ev.userId);
    if (ev.mergedCustomerIds && ev.userId) for (const c of ev.mergedCustomerIds) this._users.set(c, ev.userId);
    this._advance(ev.seq);
    const topical = [...this._groups.values()].filter((g) => topicMatches(g.patterns, ev.topic));
    // With one subscription of the topic, the hub filtered for us; with several, the hub
    // does not say which carried the event, so `where` is checked here: strictly for who
    // gets it, leniently (a userId link not yet seen may exist) for who may have carried it.
    const several = topical.length > 1;
    const matching = several ? topical.filter((g) => !g.where || this._whereMatches(g.where, ev)) : topical;
    const carriers = several ? topical.filter((g) => !g.where || this._whereMatches(g.where, ev, true)) : topical;
    if (carriers.length === 1) this._reached(carriers[0], ev.seq);
    for (const g of matching) if (!g.catching || carriers.length === 1) this._move(g, ev.seq);
    this._dispatch(ev, matching);
  }

  // An event only `g` could have carried came through its own stream, in seq order: its
  // replay has got that far. The hub runs a connection's replays one at a time in subscribe
  // order, so every replay subscribed before it is over; and its own is, once past the
  // latest seq the hub had when it subscribed. A subscription that started live (no
  // position) was never in that queue and says nothing about the others.
  _reached(g, seq) {
    if (!g.wasRecovering) return;
    for (const other of this._groups.values()) if (other.order < g.order) other.catching = false;
    if (seq > g.horizon) g.catching = false;
  }

  _dispatch(ev, groups) {
    for (const g of groups) {
      for (const h of g.handlers.slice()) {
        if (h.once) {
          g.handlers = g.handlers.filter((x) => x !== h);
          if (!g.handlers.length) this._dropGroup(g, 'once');
        }
        try {
          h.callback({ ...ev });
        } catch (e) {
          this._emitError(new ActionHubError('handler', `an event handler threw: ${e && e.message}`, { error: e }));
        }
      }
    }
  }

  // `lenient`: a field the event lacks here but the hub may know (a customer's user) matches.
  _whereMatches(where, ev, lenient) {
    return Object.keys(where).every((k) => {
      const list = [].concat(where[k]).map(norm);
      const v = k === 'userId' ? ev.userId || this._users.get(ev.customerId) : ev[k];
      if (v === undefined) return lenient && k === 'userId';
      // A merge event names its customers in mergedCustomerIds too.
      return list.includes(norm(v)) || (k === 'customerId' && (ev.mergedCustomerIds || []).some((c) => list.includes(norm(c))));
    });
  }

  /** The page's highest seq seen (`hub.seq`); not a resume position. */
  _advance(seq) {
    if (typeof seq !== 'number' || !this.epoch) return;
    if (this._cursor && this._cursor.epoch === this.epoch && this._cursor.seq >= seq) return;
    this._cursor = { seq, epoch: this.epoch };
  }

  _setSession(sid) {
    this._sid = sid;
    try {
      this._store.setItem(SID_KEY, sid);
    } catch {
      /* as above */
    }
  }

  _emitLocal(name, value) {
    const set = this._local.get(name);
    if (!set) return false;
    for (const cb of [...set]) {
      try {
        cb(value);
      } catch (e) {
        if (name !== 'error') this._emitError(new ActionHubError('handler', String(e && e.message)));
      }
    }
    return set.size > 0;
  }

  _emitError(err) {
    if (!this._emitLocal('error', err) && typeof console !== 'undefined') console.warn('actionhub:', err.code, err.message);
  }

  // ---- adapters ------------------------------------------------------------------------

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
  static toDataLayer(hub, { patterns = ['all'], where, dataLayer, eventName } = {}) {
    const name = typeof eventName === 'function' ? eventName : (e) => (eventName || 'actionhub') + '.' + e.topic;
    const push = (e) => {
      let dl = dataLayer;
      const w = /** @type {any} */ (window);
      if (!dl) dl = w.dataLayer = w.dataLayer || [];
      dl.push({ event: name(e), ...e });
    };
    hub.on(patterns, where, push);
    return () => hub.off(patterns, push);
  }
}

ActionHub.Error = ActionHubError;
ActionHub.uuid = uuid;

export default ActionHub;
