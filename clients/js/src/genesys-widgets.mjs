// Genesys Widgets' bus -> the web chat lifecycle of the action the visitor was offered.
//
// The chat widget on the page knows when its chat is opened, started, answered and ended;
// this adapter listens on its bus (`window._genesys.widgets.bus`, also `CXBus`) and reports
// each as the next state of the offered action, enriched from `started` on with the
// conversationId `WebChatService.getSessionData` gives. The action's ids and state are kept
// in sessionStorage (opaque ids only), so after a reload mid-chat the restored session
// continues the same action, and nothing is reported twice: a widget event that is not a
// transition from the state already reported (a re-sent `agentConnected`, the chat window
// reopening) is skipped.
/** @import { ActionHub, WebchatAction } from './actionhub.mjs' */

const KEY = 'actionhub.chat';
// Widget event -> the state it reports.
const STATE_OF = {
  'WebChat.opened': 'accepted',
  'WebChat.cancelled': 'rejected',
  'WebChat.closed': 'rejected',
  'WebChat.failed': 'errored',
  'WebChatService.started': 'started',
  'WebChatService.agentConnected': 'engaged',
  'WebChatService.ended': 'ended',
};
// What may follow each state (the protocol's web chat table, as far as a widget can go):
// closing the window of a started chat ends nothing, its service's `ended` does.
const NEXT = {
  offered: ['accepted', 'rejected', 'errored'],
  accepted: ['started', 'rejected', 'errored'],
  started: ['engaged', 'ended', 'errored'],
  engaged: ['ended', 'errored'],
};
// How long a report waits for the widget's session data before going without it.
const SESSION_DATA_WAIT_MS = 2000;

/**
 * @typedef {object} WidgetBus Genesys Widgets' bus (CXBus), or anything shaped like it.
 * @property {(event: string, handler: (e: {data?: any}) => void) => unknown} subscribe
 * @property {(command: string, options?: object) => PromiseLike<any>} command
 * @property {(subscription: unknown) => void} [unsubscribe]
 */

/**
 * Reports the chat widget's lifecycle for the action the visitor was offered. Returns a
 * function that detaches it.
 * @param {ActionHub} hub
 * @param {{action?: WebchatAction | (() => WebchatAction | null | undefined), bus?: WidgetBus}} [options]
 *   `action`: the offered action (from `hub.action('webchat', ...)`, already `offered()`), or a
 *   function giving the current one when the visitor opens the chat. `bus`: default the page's.
 * @returns {() => void}
 */
export function attachGenesysWidgets(hub, options = {}) {
  const store = /** @type {any} */ (hub)._store;
  /** @type {{actionId: string, actionMapId: string, actionMapVersion: number, state: string, started?: boolean} | null} */
  let chat = null;
  try {
    chat = JSON.parse(store.getItem(KEY) || 'null');
  } catch {
    chat = null;
  }
  let reports = Promise.resolve();
  /** @type {Array<() => void>} */
  const undo = [];

  const save = () => (chat && NEXT[chat.state] ? store.setItem(KEY, JSON.stringify(chat)) : store.removeItem(KEY));

  // The chat this page reports: the one restored from storage, else the action offered.
  const current = () => {
    if (chat) return chat;
    const a = typeof options.action === 'function' ? options.action() : options.action;
    if (a) chat = { actionId: a.actionId, actionMapId: a.actionMapId, actionMapVersion: a.actionMapVersion, state: 'offered' };
    return chat;
  };

  /** @param {WidgetBus} bus @param {string} state @param {any} detail */
  const report = (bus, state, detail) => {
    const c = current();
    if (!c || !(NEXT[c.state] || []).includes(state)) return;
    c.state = state;
    if (state === 'started') c.started = true;
    const enrich = c.started;
    save();
    const action = hub.action('webchat', c);
    // In order, one after another: a report waits for the session data of its own moment.
    reports = reports
      .then(() => (enrich ? sessionData(bus) : null))
      .then((session) => {
        const data = session && session.conversationId ? { conversationId: session.conversationId } : undefined;
        if (state !== 'errored') return action[state](data);
        const message = detail && (detail.message || detail.error);
        return action.errored(undefined, typeof message === 'string' ? message : undefined, data);
      })
      .catch((e) => /** @type {any} */ (hub)._emitError(e));
  };

  /** @param {WidgetBus} bus */
  const attach = (bus) => {
    for (const event of Object.keys(STATE_OF)) {
      const ref = bus.subscribe(event, (e) => report(bus, STATE_OF[event], e && e.data));
      if (bus.unsubscribe) undo.push(() => bus.unsubscribe(ref));
    }
    // `WebChatService.restored` needs no handler: a restored session is the stored chat
    // going on, with nothing new to report.
  };

  const g = /** @type {any} */ (globalThis);
  const bus = options.bus || (g._genesys && g._genesys.widgets && g._genesys.widgets.bus) || g.CXBus;
  if (bus) attach(bus);
  else {
    // The widgets have not loaded yet: attach when they say they are ready.
    const widgets = ((g._genesys = g._genesys || {}).widgets = g._genesys.widgets || {});
    const previous = widgets.onReady;
    widgets.onReady = (/** @type {WidgetBus} */ ready) => {
      if (typeof previous === 'function') previous(ready);
      attach(ready);
    };
  }
  return () => undo.splice(0).forEach((f) => f());
}

/** @param {WidgetBus} bus @returns {Promise<any>} */
function sessionData(bus) {
  const wait = new Promise((resolve) => setTimeout(resolve, SESSION_DATA_WAIT_MS, null));
  return Promise.race([Promise.resolve(bus.command('WebChatService.getSessionData')), wait]).catch(() => null);
}
