// The package as a front-end developer installs it: `require('actionhub')` and
// `import 'actionhub'` both work in Node (no window, no document) and export the same API.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

test("require('actionhub') and import('actionhub') load without a browser and export the same names", async () => {
  const cjs = require('actionhub');
  const esm = await import('actionhub');
  for (const name of ['ActionHub', 'ActionHubError', 'uuid', 'tokenUrlGetter', 'installAc', 'installGt', 'installTransactional']) {
    assert.equal(typeof cjs[name], 'function', `require: ${name}`);
    assert.equal(typeof esm[name], 'function', `import: ${name}`);
  }
  assert.equal(esm.default, esm.ActionHub);
  assert.equal(typeof new cjs.ActionHub({ autoConnect: false, url: 'ws://127.0.0.1:9/v1/ws' }).customerId, 'string');
});
