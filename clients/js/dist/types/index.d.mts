export { ActionHub, ActionHubError, uuid, tokenUrlGetter } from './actionhub.mjs';
export { acCommands, installAc } from './ac.mjs';
export { gtCommands, installGt } from './gt.mjs';
export { transactionalCommands, installTransactional } from './transactional.mjs';
export { attachGenesysWidgets } from './genesys-widgets.mjs';
export { default } from './actionhub.mjs';
export type HubEvent = import('./types.mjs').HubEvent;
export type Topic = import('./types.mjs').Topic;
export type TopicPattern = import('./types.mjs').TopicPattern;
export type EventOf<P extends string> = import('./types.mjs').EventOf<P>;
export type WebchatEvent = import('./types.mjs').WebchatEvent;
export type ContentOfferEvent = import('./types.mjs').ContentOfferEvent;
export type VisitorDelivered = import('./types.mjs').VisitorDelivered;
export type Where = import('./types.mjs').Where;
export type PublishResult = import('./types.mjs').PublishResult;
export type Snapshot = import('./types.mjs').Snapshot;
export type ActionHubOptions = import('./types.mjs').ActionHubOptions;
export type SubscriptionInfo = import('./types.mjs').SubscriptionInfo;
export type LifecycleEvent = import('./types.mjs').LifecycleEvent;
export type VisitorEvent = import('./types.mjs').VisitorEvent;
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
