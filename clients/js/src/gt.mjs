// The `_gt.push([command, options])` Monitoring JS API of Genesys Web Engagement, on an
// actionhub client. Its system events map to visitor events (SignIn -> signin, UserInfo ->
// userinfo, SignOut -> signout, PageEntered -> page), its business events to track events.
import { install, noteOnce, settle, pageOf } from './dropin.mjs';
/** @import { ActionHub } from './actionhub.mjs' */

/**
 * The `_gt` object: `push([command, options], ...)` runs each command and returns how many.
 * @typedef {{hub: ActionHub, push(...commands: unknown[][]): number}} GtObject
 */

// The identity commands' options: `userId`, the rest are the visitor's traits.
/**
 * @param {ActionHub} hub
 * @param {'signin' | 'userinfo'} type
 * @param {any} [options]
 */
function identity(hub, type, options = {}) {
  const { userId, ...traits } = options;
  return hub[type](userId, Object.keys(traits).length ? traits : undefined);
}

/**
 * One `_gt` command. Business events come in either release's form:
 * `['event', {eventName, ...}]` (8.1) or `['event', name, {data}]` (8.5).
 */
function event(hub, name, data) {
  if (name === 'SignIn') return identity(hub, 'signin', data);
  if (name === 'UserInfo') return identity(hub, 'userinfo', data);
  if (name === 'SignOut') return hub.signout();
  if (name === 'PageEntered') return hub.page(pageOf(data && data.url, data && data.title));
  // The hub has no page-exit event; a track event keeps it in the visitor's history.
  if (name === 'PageExited') return hub.track('PageExited', { url: (data && data.url) || globalThis.location?.href });
  return hub.track(name, data && Object.keys(data).length ? data : undefined);
}

function run(hub, item) {
  if (!Array.isArray(item)) return noteOnce('gt[]', '_gt.push takes arrays: [command, options]', 'warn');
  const [command, a, b] = item;
  if (command === 'sendSignIn') return event(hub, 'SignIn', a);
  if (command === 'sendUserInfo') return event(hub, 'UserInfo', a);
  if (command === 'sendSignOut') return event(hub, 'SignOut');
  if (command === 'event') {
    if (typeof a === 'string') return event(hub, a, b && b.data);
    const { eventName, ...data } = a || {};
    return event(hub, eventName, data);
  }
  if (command === 'config') return noteOnce('gt:config', "_gt.push(['config', ...]) does nothing: the hub comes from the script URL");
  noteOnce('gt?' + command, `unknown _gt command ${JSON.stringify(command)} ignored`, 'warn');
}

/**
 * A `_gt`-shaped object whose `push(...commands)` drives `hub`.
 * @param {ActionHub} hub
 * @returns {GtObject}
 */
export function gtCommands(hub) {
  return {
    hub,
    push(...items) {
      for (const item of items) settle(hub, () => run(hub, item));
      return items.length;
    },
  };
}

/**
 * Installs `_gt` as `window[name]` (unless another script owns it), reports the page entered
 * as Web Engagement's tracker does on load, then runs what the page pushed before the SDK
 * loaded, in order. Returns the `_gt` object either way.
 */
/**
 * @param {ActionHub} hub
 * @param {string} [name]
 * @param {{pageEntered?: boolean}} [options] `pageEntered: false` leaves out the page view at load
 * @returns {GtObject}
 */
export function installGt(hub, name = '_gt', { pageEntered = true } = {}) {
  const gt = gtCommands(hub);
  const queued = install(name, gt, (stub) => stub.slice());
  if (queued) {
    if (pageEntered) gt.push(['event', 'PageEntered']);
    gt.push(...queued);
  }
  return gt;
}
