import type { ActionHub } from './actionhub.mjs';
export type TransactionalFunction = {
    (command: 'identify', userId: string, traits?: Record<string, unknown>): void;
    (command: 'update', attributes: Record<string, unknown>): void;
    (command: 'trackPageView', page?: {
        page?: string;
        title?: string;
    }): void;
    (command: 'trackEvent', name: string, properties?: Record<string, unknown>): void;
    (command: string, ...args: unknown[]): void;
    hub: ActionHub;
};
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
export declare function transactionalCommands(hub: ActionHub): TransactionalFunction;
/** Installs it as `window[name]` (unless another script owns it) and runs the stub's queued calls. */
/**
 * @param {ActionHub} hub
 * @param {string} [name]
 * @returns {TransactionalFunction}
 */
export declare function installTransactional(hub: ActionHub, name?: string): TransactionalFunction;
