/** @import { ActionHub, WebchatAction } from './actionhub.mjs' */
import type { ActionHub, WebchatAction } from './actionhub.mjs';
export type WidgetBus = {
    subscribe: (event: string, handler: (e: {
        data?: any;
    }) => void) => unknown;
    command: (command: string, options?: object) => PromiseLike<any>;
    unsubscribe?: (subscription: unknown) => void;
};
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
export declare function attachGenesysWidgets(hub: ActionHub, options?: {
    action?: WebchatAction | (() => WebchatAction | null | undefined);
    bus?: WidgetBus;
}): () => void;
