// The console's one WebSocket to the hub and its HTTP reads. It keeps every subscription's
// position (seq and epoch), so a reconnect, after a network drop or a hub restart, resumes
// each one with `since` and loses nothing the hub still retains; the hub answers with a
// snapshot instead when it cannot (another epoch, history gone). The API key lives in
// sessionStorage only: it is gone when the tab closes, and other tabs never see it.

const KEY_STORE = 'actionhub.console.key';

export class Hub {
  constructor() {
    this.apiKey = sessionStorage.getItem(KEY_STORE) || '';
    this.epoch = null;
    this.node = null;
    /** name -> {request, cursor: {seq, epoch} | null, handlers} */
    this.subs = new Map();
    this.listeners = { event: [], status: [], connected: [] };
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.nextId = 1;
  }

  on(kind, fn) {
    this.listeners[kind].push(fn);
  }

  emit(kind, ...args) {
    for (const fn of this.listeners[kind]) fn(...args);
  }

  setKey(key) {
    this.apiKey = key;
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
    // Another key may see other data: start every subscription afresh.
    for (const sub of this.subs.values()) sub.cursor = null;
    this.attempt = 0;
    this.connect();
  }

  /**
   * Subscribes now (when connected) and after every reconnect. `handlers.snapshot(frame)`
   * gets snapshot frames; `handlers.match(event)` says which events belong to the
   * subscription, since an event frame does not name the subscription that carried it,
   * and the cursor follows only those. `cursor` ({seq, epoch}) starts it after a position
   * already read over HTTP, so nothing between the read and the subscription is missed.
   */
  subscribe(name, request, handlers = {}, cursor = null) {
    const sub = { request, cursor, handlers, snapshotOpen: false };
    this.subs.set(name, sub);
    if (this.ready) this.sendSubscribe(name, sub);
  }

  unsubscribe(name) {
    if (!this.subs.delete(name)) return;
    if (this.ready) this.send({ op: 'unsubscribe', sub: name });
  }

  send(frame) {
    this.ws.send(JSON.stringify({ id: this.nextId++, ...frame }));
  }

  sendSubscribe(name, sub) {
    const frame = { op: 'subscribe', sub: name, ...sub.request };
    if (sub.cursor) Object.assign(frame, { since: sub.cursor.seq, epoch: sub.cursor.epoch });
    sub.snapshotOpen = false;
    this.send(frame);
  }

  status(state, text) {
    this.emit('status', state, text);
  }

  connect() {
    clearTimeout(this.timer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close();
    }
    this.ready = false;
    const url = new URL('/v1/ws', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    this.status('connecting', 'connecting…');
    const sock = (this.ws = new WebSocket(url, 'actionhub.v1'));
    sock.onopen = () => this.send({ op: 'connect', client: { name: 'console' }, ...(this.apiKey ? { apiKey: this.apiKey } : {}) });
    sock.onmessage = (m) => this.frame(JSON.parse(m.data));
    sock.onclose = (e) => {
      if (this.ws !== sock) return;
      this.ws = null;
      this.ready = false;
      if (e.code === 4001 || e.code === 4003) {
        this.status('error', e.code === 4001 ? 'key refused: enter a valid API key' : 'forbidden: this key lacks the subscribe scope');
        return;
      }
      // Full jitter, doubling up to 15 s: a restarted hub is not met by every console at once.
      const delay = Math.min(15000, 500 * 2 ** this.attempt++) * (0.5 + Math.random() / 2);
      this.status('reconnecting', `reconnecting in ${Math.ceil(delay / 1000)} s…`);
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  frame(f) {
    if (f.type === 'connected') {
      this.attempt = 0;
      this.ready = true;
      this.epoch = f.epoch;
      this.node = f.node || null;
      this.status('live', f.scope?.kind === 'open' ? 'live · open mode' : 'live');
      for (const [name, sub] of this.subs) this.sendSubscribe(name, sub);
      this.emit('connected', f);
    } else if (f.type === 'subscribed') {
      const sub = this.subs.get(f.sub);
      if (sub && f.recovered !== true) sub.cursor = { seq: f.seq, epoch: this.epoch };
    } else if (f.type === 'snapshot') {
      const sub = this.subs.get(f.sub);
      if (!sub) return;
      const first = !sub.snapshotOpen;
      sub.snapshotOpen = f.more === true;
      sub.handlers.snapshot?.(f, first);
      if (!sub.snapshotOpen) sub.cursor = { seq: f.seq, epoch: this.epoch };
    } else if (f.type === 'event') {
      for (const sub of this.subs.values()) {
        if (sub.cursor && f.seq > sub.cursor.seq && (!sub.handlers.match || sub.handlers.match(f.event))) {
          sub.cursor = { seq: f.seq, epoch: this.epoch };
        }
      }
      this.emit('event', f.event, f.seq);
    } else if (f.type === 'error') {
      this.status('error', `${f.code}: ${f.message}`);
    }
  }

  /** GET `path` with the key; resolves `{status, body}` whatever the status. */
  async get(path) {
    const r = await fetch(path, { headers: this.apiKey ? { 'X-API-Key': this.apiKey } : {} });
    const text = await r.text();
    let body = null;
    if (r.headers.get('content-type')?.includes('json')) body = text ? JSON.parse(text) : null;
    else body = text;
    return { status: r.status, body };
  }

  /** GET `path`'s JSON; rejects with the hub's error message on any status but 2xx. */
  async json(path) {
    const { status, body } = await this.get(path);
    if (status >= 200 && status < 300) return body;
    const err = new Error(body?.error?.message || `HTTP ${status}`);
    err.status = status;
    err.code = body?.error?.code;
    throw err;
  }
}
