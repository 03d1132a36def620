import type { ActionHub } from './actionhub.mjs';
import type { EventOf, PublishResult, TopicPattern, Where } from './types.mjs';
export type AcFunction = {
    <P extends TopicPattern>(command: 'on' | 'once', pattern: P | P[], callback: (event: EventOf<P>) => void): ActionHub;
    <P extends TopicPattern>(command: 'on' | 'once', pattern: P | P[], where: Where, callback: (event: EventOf<P>) => void): ActionHub;
    (command: 'pageview', options?: {
        location?: string;
        title?: string;
    }): Promise<PublishResult> | undefined;
    (command: 'record', name: string, properties?: Record<string, unknown>): Promise<PublishResult> | undefined;
    (command: 'update', attributes: Record<string, unknown>, company?: {
        id: string;
        name?: string;
    } & Record<string, unknown>): Promise<PublishResult> | undefined;
    (command: string, ...args: any[]): any;
    hub: ActionHub;
};
/**
 * An `ac(command, ...args)` function driving `hub`. Unknown commands warn once and return undefined.
 * @param {ActionHub} hub
 * @returns {AcFunction}
 */
export declare function acCommands(hub: ActionHub): AcFunction;
/** The options of the first `ac('init', orgId, options)` the stub `window[name]` queued, if any. */
/**
 * @param {string} [name]
 * @returns {{hub?: string, tokenUrl?: string}}
 */
export declare function queuedInit(name?: string): {
    hub?: string;
    tokenUrl?: string;
};
/**
 * Installs `ac` as `window[name]` (unless another script owns it) and runs the calls the
 * snippet's stub queued, in order. Returns the `ac` function either way.
 */
/**
 * @param {ActionHub} hub
 * @param {string} [name]
 * @returns {AcFunction}
 */
export declare function installAc(hub: ActionHub, name?: string): AcFunction;
