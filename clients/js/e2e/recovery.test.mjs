// Recovery in headless Chromium: a page whose hub takes browser tokens only gets them from
// the site's token URL (data-token-url) and outlives several tokens on one connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHub } from '../test/hub.mjs';
import { launchBrowser, startSite, newPage } from './site.mjs';

const KEY = 'e2e-site-key';
const SECRET = 'e2e-recovery-secret-0123456789abcdef012345';
let hub;
let site;
let browser;
const minted = [];

before(async () => {
  // Production-like: keys and token secrets, no open mode; no clock skew forgiven, so a
  // 3-second token ends after 3 seconds.
  hub = await startHub({ args: ['--api-keys', `${KEY}=publish+subscribe`, '--jwt-secrets', SECRET, '--jwt-leeway', '0s'] });
  const pages = {
    '/tokens.html': `<!doctype html><title>tokens</title><script>
      window.ac = window.ac || function () { (ac.q = ac.q || []).push(arguments); };
      window.heard = [];
      window.drops = 0;
      ac('on', 'visitor:track', function (e) { heard.push(e.name); });
      ac('on', 'disconnected', function () { drops++; });
    </script><script src="HUB/sdk/actionhub.js" data-actionhub data-token-url="/token"></script>`,
  };
  // The site's token endpoint: its own login would decide the user; here, any customer.
  const token = async (req, res) => {
    const customerId = new URL(req.url, 'http://x').searchParams.get('customerId');
    const r = await fetch(`${hub.http}/v1/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': KEY },
      body: JSON.stringify({ customerId, ttlSeconds: 3 }),
    });
    minted.push({ method: req.method, customerId });
    res.writeHead(r.status, { 'content-type': 'application/json' }).end(await r.text());
  };
  site = await startSite({ hub: () => hub, pages, routes: { '/token': token } });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await site?.close();
  await hub?.dispose();
});

test('a page with a token URL survives token expiry without a reconnect', { timeout: 40_000 }, async () => {
  const { context, page, problems } = await newPage(browser);
  await page.goto(site.url('/tokens.html'));
  await page.waitForFunction(() => window.actionhub && window.actionhub.connected);
  const { connId, customerId } = await page.evaluate(() => ({ connId: window.actionhub.connId, customerId: window.actionhub.customerId }));
  // Four tokens: the first, then three refreshes, each before the one in force expired.
  const deadline = Date.now() + 20_000;
  while (minted.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.ok(minted.length >= 4, `tokens minted: ${minted.length}`);
  assert.ok(minted.every((m) => m.method === 'POST' && m.customerId === customerId));
  await page.evaluate(() => ac('record', 'after-expiry'));
  await page.waitForFunction(() => window.heard.includes('after-expiry'), null, { timeout: 5000 });
  assert.equal(await page.evaluate(() => window.actionhub.connId), connId, 'the same connection');
  assert.equal(await page.evaluate(() => window.drops), 0, 'never disconnected');
  assert.deepEqual(problems, []);
  await context.close();
});
