// The `TransactionalSupport(command, ...args)` widget API, on an actionhub client:
// identify -> identify, update -> identify with the new traits (the hub keeps attributes as
// the profile's traits), trackPageView -> page, trackEvent -> track.
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
  // The user `update` applies to: the last one identified, else the token's.
  let user = null;
  /** @type {any} */
  const ts = (command, a, b) => {
    if (command === 'identify') {
      user = a;
      return void settle(hub, () => hub.identify(a, b));
    }
    if (command === 'update') {
      // Attributes belong to a profile: the hub keeps them as traits, reached by a userId.
      // Before any is known, a browser cannot set them (PUT /v1/visitors needs a server key).
      if (user || hub.tokenUserId) return void settle(hub, () => hub.identify(user, a));
      return noteOnce('ts:update', "TransactionalSupport('update') before 'identify' does nothing: attributes need a known user");
    }
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
