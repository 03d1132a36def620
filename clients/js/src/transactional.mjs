// The `TransactionalSupport(command, ...args)` widget API, on an actionhub client:
// identify -> identify, update -> update (the hub merges the attributes into the current
// visitor, identified or not), trackPageView -> page, trackEvent -> track.
import { install, noteOnce, settle, pageOf } from './dropin.mjs';
/** @import { ActionHub } from './actionhub.mjs' */

/**
 * `TransactionalSupport(command, ...args)`; returns nothing, as the widget's does.
 * @typedef {{
 *   (command: 'identify', userId: string, traits?: Record<string, unknown>): void,
 *   (command: 'update', attributes: Record<string, unknown>): void,
 *   (command: 'trackPageView', page?: {page?: string, title?: string}): void,
 *   (command: 'trackEvent', name: string, properties?: Record<string, unknown>): void,
 *   (command: string, ...args: unknown[]): void,
 *   hub: ActionHub,
 * }} TransactionalFunction
 */

/**
 * A `TransactionalSupport(command, ...args)` function driving `hub`.
 * @param {ActionHub} hub
 * @returns {TransactionalFunction}
 */
export function transactionalCommands(hub) {
  /** @type {any} */
  const ts = (command, a, b) => {
    if (command === 'identify') return void settle(hub, () => hub.identify(a, b));
    if (command === 'update') return void settle(hub, () => hub.update(a || {}));
    if (command === 'trackPageView') return void settle(hub, () => hub.page(pageOf(a && a.page, a && a.title)));
    if (command === 'trackEvent') return void settle(hub, () => hub.track(a, b));
    noteOnce('ts?' + command, `unknown TransactionalSupport command ${JSON.stringify(command)} ignored`, 'warn');
  };
  ts.hub = hub;
  return ts;
}

/** Installs it as `window[name]` (unless another script owns it) and runs the stub's queued calls. */
/**
 * @param {ActionHub} hub
 * @param {string} [name]
 * @returns {TransactionalFunction}
 */
export function installTransactional(hub, name = 'TransactionalSupport') {
  const ts = transactionalCommands(hub);
  const queued = install(name, ts, (stub) => Array.from(stub.q || []));
  for (const args of queued || []) ts.apply(null, args);
  return ts;
}
