// What the console knows of the hub's customers and actions, built from the main
// subscription: its snapshot first, then every event. Pure data, no DOM: the views read it.

export const TERMINAL = {
  webchat: ['ended', 'rejected', 'ignored', 'timedout', 'errored'],
  contentoffer: ['accepted', 'rejected', 'ignored', 'errored'],
};
export const STATES = ['qualified', 'offered', 'accepted', 'started', 'engaged', 'ended', 'rejected', 'ignored', 'timedout', 'errored'];

export const isTerminal = (a) => (TERMINAL[a.actionMediaType] || []).includes(a.actionState);

export class Model {
  constructor() {
    this.customers = new Map(); // customerId -> customer
    this.actions = new Map(); // actionId -> action
    this.version = 0; // bumped on every change, so views redraw only when something moved
    this.sorted = [];
    this.sortedVersion = -1;
  }

  customer(id) {
    let c = this.customers.get(id);
    if (!c) {
      c = { customerId: id, state: 'anonymous', userId: null, email: '', name: '', sessionId: null, actions: new Map(), lastSeen: '' };
      this.customers.set(id, c);
    }
    return c;
  }

  /** Customers, most recently seen first; sorted again only after a change. */
  byRecency() {
    if (this.sortedVersion !== this.version) {
      this.sorted = [...this.customers.values()].sort((a, b) => (a.lastSeen < b.lastSeen ? 1 : a.lastSeen > b.lastSeen ? -1 : 0));
      this.sortedVersion = this.version;
    }
    return this.sorted;
  }

  liveActions() {
    let n = 0;
    for (const a of this.actions.values()) if (!isTerminal(a)) n++;
    return n;
  }

  applyAction(a) {
    const prev = this.actions.get(a.actionId);
    if (prev && prev.seq >= a.seq) return;
    const action = prev || { history: [] };
    Object.assign(action, a);
    action.history.push(a.actionState);
    this.actions.set(a.actionId, action);
    const c = this.customer(a.customerId);
    c.actions.set(a.actionId, action);
    if (a.sessionId && !c.sessionId) c.sessionId = a.sessionId;
    touch(c, a.timestamp);
    this.version++;
  }

  apply(ev) {
    if (ev.actionId) return this.applyAction(ev);
    if (!ev.customerId) return;
    const c = this.customer(ev.customerId);
    touch(c, ev.timestamp);
    this.version++;
    const [family, name] = ev.topic.split(':');
    if (family === 'session') {
      if (name === 'started') c.sessionId = ev.sessionId;
      else if (c.sessionId === ev.sessionId) c.sessionId = null;
      return;
    }
    if (family !== 'visitor') return;
    if (ev.traits) {
      if (typeof ev.traits.email === 'string') c.email = ev.traits.email;
      if (typeof ev.traits.name === 'string') c.name = ev.traits.name;
    }
    if (name === 'signin') Object.assign(c, { state: 'authenticated', userId: ev.userId, sessionId: ev.sessionId });
    else if (name === 'signout') c.state = 'anonymous';
    else if (name === 'userinfo') Object.assign(c, { state: 'recognized', userId: ev.userId });
    else if (name === 'identify') {
      if (ev.userId) c.userId = ev.userId;
      if (c.state === 'anonymous') c.state = 'recognized';
    } else if (name === 'page' && ev.sessionId && !c.sessionId) c.sessionId = ev.sessionId;
  }

  /**
   * One frame of a snapshot. A big snapshot comes as several frames sharing one seq; the
   * model is replaced at the first and filled by the rest.
   */
  applySnapshot(frame, first) {
    if (first) {
      this.actions.clear();
      this.customers.clear();
    }
    for (const c of frame.customers || []) {
      const m = this.customer(c.customerId);
      m.state = c.identity?.state || 'anonymous';
      m.userId = c.identity?.userId || null;
    }
    for (const a of frame.actions || []) this.applyAction(a);
    this.version++;
  }
}

function touch(c, ts) {
  if (ts && ts > c.lastSeen) c.lastSeen = ts;
}

/** Whether customer `c` matches the search text `q` (lower case): its id, user id or email. */
export function customerMatches(c, q) {
  return !q || c.customerId.includes(q) || (c.userId || '').toLowerCase().includes(q) || c.email.toLowerCase().includes(q) ||
    c.name.toLowerCase().includes(q);
}
