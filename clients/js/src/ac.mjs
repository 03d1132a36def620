// The `ac(...)` command queue of Genesys Predictive Engagement's snippet, on an actionhub
// client: the web-action event methods (on/once/off), the tracking commands a page sends
// (pageview, record), and the setup commands it may send that actionhub has no use for.
import { install, noteOnce, settle, pageOf } from './dropin.mjs';
/** @import { ActionHub } from './actionhub.mjs' */
/** @import { EventOf, PublishResult, TopicPattern, Where } from './types.mjs' */

/**
 * `ac(command, ...args)`: the commands of the table in README.md, each returning what the
 * client's method returns (a promise for publishes, already handled), or undefined.
 * @typedef {{
 *   <P extends TopicPattern>(command: 'on' | 'once', pattern: P | P[], callback: (event: EventOf<P>) => void): ActionHub,
 *   <P extends TopicPattern>(command: 'on' | 'once', pattern: P | P[], where: Where, callback: (event: EventOf<P>) => void): ActionHub,
 *   (command: 'pageview', options?: {location?: string, title?: string}): Promise<PublishResult> | undefined,
 *   (command: 'record', name: string, properties?: Record<string, unknown>): Promise<PublishResult> | undefined,
 *   (command: 'update', attributes: Record<string, unknown>, company?: {id: string, name?: string} & Record<string, unknown>): Promise<PublishResult> | undefined,
 *   (command: string, ...args: any[]): any,
 *   hub: ActionHub,
 * }} AcFunction
 */

// Commands a page sends that have nothing to do here: accepted, noted once each.
const NOTES = {
  init: 'ac("init") takes no orgId or region here; the hub comes from the script URL, or from init options {hub, tokenUrl} given before the SDK loads',
  load: 'ac("load", plugin) does nothing: actionhub has no plugins',
  'forms:track': 'ac("forms:track") does nothing: actionhub does not track forms',
};
// The client's own methods, callable as commands too (`ac('identify', userId, traits)`).
const METHODS = ['on', 'once', 'off', 'publish', 'action', 'identify', 'signin', 'signout', 'userinfo', 'update', 'page', 'exit', 'track', 'snapshot', 'history', 'close'];

/**
 * An `ac(command, ...args)` function driving `hub`. Unknown commands warn once and return undefined.
 * @param {ActionHub} hub
 * @returns {AcFunction}
 */
export function acCommands(hub) {
  /** @type {any} */
  const ac = (command, ...args) => {
    if (command === 'pageview') {
      // `ac('pageview', {location, title})`; without options, this page.
      const o = args[0] || {};
      return settle(hub, () => hub.page(pageOf(o.location || o.url, o.title)));
    }
    if (command === 'record') return settle(hub, () => hub.track(args[0], args[1]));
    if (NOTES[command]) return noteOnce('ac:' + command, NOTES[command]);
    if (METHODS.includes(command)) return settle(hub, () => hub[command](...args));
    noteOnce('ac?' + command, `unknown ac command ${JSON.stringify(command)} ignored`, 'warn');
  };
  ac.hub = hub;
  return ac;
}

/** The options of the first `ac('init', orgId, options)` the stub `window[name]` queued, if any. */
/**
 * @param {string} [name]
 * @returns {{hub?: string, tokenUrl?: string}}
 */
export function queuedInit(name = 'ac') {
  const stub = globalThis[name];
  const init = stub && Array.isArray(stub.q) && Array.from(stub.q).find((args) => args[0] === 'init');
  return (init && init[2]) || {};
}

/**
 * Installs `ac` as `window[name]` (unless another script owns it) and runs the calls the
 * snippet's stub queued, in order. Returns the `ac` function either way.
 */
/**
 * @param {ActionHub} hub
 * @param {string} [name]
 * @returns {AcFunction}
 */
export function installAc(hub, name = 'ac') {
  const ac = acCommands(hub);
  const queued = install(name, ac, (stub) => Array.from(stub.q || []));
  for (const args of queued || []) ac.apply(null, args);
  return ac;
}
