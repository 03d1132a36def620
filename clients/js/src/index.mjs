// The package's module entry: the client and every adapter, each a named export with no
// side effect, so a bundler keeps only what a page imports.
export { ActionHub, ActionHubError, uuid, tokenUrlGetter } from './actionhub.mjs';
export { acCommands, installAc } from './ac.mjs';
export { gtCommands, installGt } from './gt.mjs';
export { transactionalCommands, installTransactional } from './transactional.mjs';
export { default } from './actionhub.mjs';
