// What the three drop-ins (ac, _gt, TransactionalSupport) share: installing a command API as
// a page global without taking over one that another script owns, running the calls a
// snippet queued before the SDK loaded, and console notes written once each.
//
// A drop-in never throws into the page and never leaves a rejected promise unhandled: a
// site's snippet ignores what its calls return, and its error monitor would count every
// refusal as a crash. Failures go to the hub's `error` handlers (console.warn without one).

const OWN = '__actionhub';
const hasWindow = typeof window !== 'undefined';

const noted = new Set();

/**
 * Writes `message` to the console once per `key` on the page.
 * @param {string} key
 * @param {string} message
 * @param {'info' | 'warn'} [level]
 */
export function noteOnce(key, message, level = 'info') {
  if (noted.has(key) || typeof console === 'undefined') return;
  noted.add(key);
  console[level]('actionhub: ' + message);
}

/**
 * Runs one command, sending a thrown error or a rejection to the hub's error handlers.
 * @template T
 * @param {import('./actionhub.mjs').ActionHub} hub
 * @param {() => T} run
 * @returns {T | undefined}
 */
export function settle(hub, run) {
  const report = (e) => /** @type {any} */ (hub)._emitError(e);
  let result;
  try {
    result = run();
  } catch (e) {
    report(e);
    return undefined;
  }
  if (result && typeof result.then === 'function') result.then(undefined, report);
  return result;
}

// A snippet's stub only queues: an array (`_gt = _gt || []`) or a function that pushes its
// arguments onto `.q`. Anything else is another script's working API.
function isStub(value) {
  if (value === undefined || value === null) return true;
  if (Array.isArray(value)) return value.push === Array.prototype.push;
  return typeof value === 'function' && /\.push\(arguments\)/.test(Function.prototype.toString.call(value));
}

/**
 * Installs `api` as the page global `name` and returns what the stub there had queued
 * (`queued(stub)`), or null, leaving the global alone, when another script already owns it
 * (said on the console) or this SDK installed it already.
 * @param {string} name
 * @param {any} api
 * @param {(stub: any) => any[]} queued
 * @returns {any[] | null}
 */
export function install(name, api, queued) {
  api[OWN] = true;
  // globalThis is the window on a page (and something a test can look at in Node).
  const current = globalThis[name];
  if (current && current[OWN]) {
    noteOnce('twice:' + name, `window.${name} is already actionhub's; the second copy of the SDK leaves it`, 'warn');
    return null;
  }
  if (!isStub(current)) {
    noteOnce('owned:' + name, `window.${name} belongs to another script; actionhub leaves it alone (remove that script, or name another global)`, 'warn');
    return null;
  }
  globalThis[name] = api;
  return current ? queued(current) : [];
}

/**
 * A page view's details: `url` resolved against this page's, and `title`, when given.
 * @param {string} [url]
 * @param {string} [title]
 */
export function pageOf(url, title) {
  /** @type {{url?: string, title?: string}} */
  const page = {};
  if (url) page.url = new URL(url, hasWindow ? location.href : undefined).href;
  if (title) page.title = title;
  return page;
}
