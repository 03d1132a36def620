// The package's module entry: the client and every adapter, each a named export with no
// side effect, so a bundler keeps only what a page imports.
export { ActionHub, ActionHubError, uuid, tokenUrlGetter } from './actionhub.mjs';
export { acCommands, installAc } from './ac.mjs';
export { gtCommands, installGt } from './gt.mjs';
export { transactionalCommands, installTransactional } from './transactional.mjs';
export { attachGenesysWidgets } from './genesys-widgets.mjs';
export { default } from './actionhub.mjs';
/** @typedef {import('./types.mjs').HubEvent} HubEvent */
/** @typedef {import('./types.mjs').Topic} Topic */
/** @typedef {import('./types.mjs').TopicPattern} TopicPattern */
/** @template {string} P @typedef {import('./types.mjs').EventOf<P>} EventOf */
/** @typedef {import('./types.mjs').WebchatEvent} WebchatEvent */
/** @typedef {import('./types.mjs').ContentOfferEvent} ContentOfferEvent */
/** @typedef {import('./types.mjs').VisitorDelivered} VisitorDelivered */
/** @typedef {import('./types.mjs').Where} Where */
/** @typedef {import('./types.mjs').PublishResult} PublishResult */
/** @typedef {import('./types.mjs').Snapshot} Snapshot */
/** @typedef {import('./types.mjs').ActionHubOptions} ActionHubOptions */
/** @typedef {import('./types.mjs').SubscriptionInfo} SubscriptionInfo */
/** @typedef {import('./types.mjs').LifecycleEvent} LifecycleEvent */
/** @typedef {import('./types.mjs').VisitorEvent} VisitorEvent */
