// The classic script (`/sdk/actionhub.js`): sets `window.ActionHub`, and starts a client
// with the drop-ins the page asks for.
//
// Settings come from the script tag's data attributes or, for a snippet that injects the
// script from code (so it has no tag to carry attributes), from the script URL's query
// string, under the same names without `data-`:
//   data-actionhub[=hub URL] / ?hub=URL      start a client (hub default: the script's origin)
//   data-token-url=URL / ?token-url=URL      fetch browser tokens there (see tokenUrlGetter)
//   data-ac[=name] / ?ac[=name]              install the ac(...) command queue (default `ac`)
//   data-gt[=name] / ?gt[=name]              install _gt.push (default `_gt`)
//   data-transactional-support[=name] / ?transactional-support[=name]
//                                            install TransactionalSupport(...)
//   data-datalayer[=patterns] / ?datalayer   feed window.dataLayer
// Any of them starts the client. `data-actionhub` without a drop-in installs `ac`, as
// earlier releases did (`data-global` names it). `ac('init', orgId, {hub, tokenUrl})`
// queued before the SDK loads fills in what the URL leaves out.
import * as sdk from './index.mjs';
import { queuedInit } from './ac.mjs';

const { ActionHub } = sdk;
// A classic script has one global: every adapter hangs off it (`ActionHub.installGt`), and
// `commandQueue` keeps the name earlier releases gave the ac installer.
for (const [name, value] of Object.entries(sdk)) if (name !== 'default' && !(name in ActionHub)) ActionHub[name] = value;
ActionHub.commandQueue = sdk.installAc;

const script = typeof document !== 'undefined' ? document.currentScript : null;
const KEYS = ['actionhub', 'hub', 'token-url', 'ac', 'gt', 'transactional-support', 'datalayer', 'global'];

/** The settings a script element carries: its data attributes, then its URL's query string. */
export function scriptSettings(el) {
  const query = new URL(el.src || location.href, location.href).searchParams;
  const settings = {};
  for (const key of KEYS) {
    const attr = el.getAttribute('data-' + key);
    const value = attr !== null ? attr : query.get(key);
    if (value !== null) settings[key] = value;
  }
  return settings;
}

if (script) {
  const s = scriptSettings(script);
  if (Object.keys(s).length) {
    const dropins = ['ac', 'gt', 'transactional-support'].filter((k) => k in s);
    if (!dropins.length || 'global' in s) s.ac = s.ac || s.global || 'ac';
    const init = queuedInit(s.ac || 'ac');
    const hub = new ActionHub({
      url: s.actionhub || s.hub || init.hub || undefined,
      tokenUrl: s['token-url'] || init.tokenUrl || undefined,
    });
    window.actionhub = hub;
    if ('ac' in s) sdk.installAc(hub, s.ac || 'ac');
    if ('gt' in s) sdk.installGt(hub, s.gt || '_gt');
    if ('transactional-support' in s) sdk.installTransactional(hub, s['transactional-support'] || 'TransactionalSupport');
    if ('datalayer' in s) ActionHub.toDataLayer(hub, s.datalayer ? { patterns: s.datalayer.split(',') } : {});
  }
}

export default ActionHub;
