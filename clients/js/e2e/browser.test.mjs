// End-to-end in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core;
// never a browser download). A real hub serves the SDK; a small static
// server on another port plays the customer's website, so the SDK runs cross-origin as it
// would on a real site.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHub, post, getJson, until, uuid, lifecycle } from '../test/hub.mjs';
import { launchBrowser, startSite, newPage as openPage } from './site.mjs';

let hub;
let site;
let browser;

// Pages of the demo site. `HUB` is replaced by the hub's address.
const pages = {
  // Snippet-style code queued before the SDK loads; the classic script starts itself.
  '/queued.html': `<!doctype html><title>queued</title><script>
    window.ac = window.ac || function () { (window.ac.q = window.ac.q || []).push(arguments); };
    window.got = [];
    ac('on', 'webchat:all', function (e) { window.got.push(e); });
  </script><script src="HUB/sdk/actionhub.js" data-actionhub="HUB"></script>`,
  // A page that records what it hears about its own customer, resuming across navigations.
  '/shop.html': `<!doctype html><title>shop</title><script type="module">
    import { ActionHub } from 'HUB/sdk/actionhub.mjs';
    const hub = (window.hub = new ActionHub({ url: 'HUB', backoff: { min: 100, max: 1000 } }));
    window.got = [];
    hub.on('webchat:all', { customerId: [hub.customerId] }, (e) => window.got.push({ seq: e.seq, actionId: e.actionId, state: e.actionState }));
    hub.ready().then(() => (window.isReady = true));
  </script>`,
  // A tag manager's data layer that exists before the SDK and has its own push hook.
  '/datalayer.html': `<!doctype html><title>dl</title><script>
    window.dataLayer = [{ event: 'gtm.js' }];
    window.originalLayer = window.dataLayer;
    const push = window.dataLayer.push;
    window.hooked = 0;
    window.dataLayer.push = function () { window.hooked++; return push.apply(this, arguments); };
  </script><script type="module">
    import { ActionHub } from 'HUB/sdk/actionhub.mjs';
    const hub = (window.hub = new ActionHub({ url: 'HUB' }));
    ActionHub.toDataLayer(hub, { patterns: ['webchat:all', 'contentoffer:all'], where: { customerId: [hub.customerId] } });
    hub.ready().then(() => (window.isReady = true));
  </script>`,
  // A page that reports its own view and is then hidden and shown again.
  '/exits.html': `<!doctype html><title>exits</title><script type="module">
    import { ActionHub } from 'HUB/sdk/actionhub.mjs';
    const hub = (window.hub = new ActionHub({ url: 'HUB' }));
    hub.page().then(() => (window.viewed = true));
  </script>`,
};

before(async () => {
  hub = await startHub();
  site = await startSite({ hub: () => hub, pages });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await site?.close();
  await hub?.dispose();
});

const siteUrl = (path) => site.url(path);
const newPage = () => openPage(browser);

test("ac('on', ...) queued before the SDK loads receives events", { timeout: 30_000 }, async () => {
  const { context, page, problems } = await newPage();
  await page.goto(siteUrl('/queued.html'));
  await page.waitForFunction(() => window.actionhub && window.actionhub.connected && window.actionhub._cursor);
  const customerId = await page.evaluate(() => window.actionhub.customerId);
  const ids = { actionId: uuid(), actionMapId: uuid(), customerId, sessionId: uuid() };
  const [r] = await post(hub, [lifecycle('offered', ids)]);
  await page.waitForFunction((id) => window.got.some((e) => e.actionId === id), ids.actionId, { timeout: 5000 });
  const got = await page.evaluate((id) => window.got.filter((e) => e.actionId === id), ids.actionId);
  assert.equal(got.length, 1);
  assert.equal(got[0].seq, r.seq);
  assert.equal(got[0].topic, 'webchat:offered');
  assert.equal(await page.evaluate(() => typeof window.ActionHub), 'function', 'the classic script sets window.ActionHub');
  assert.equal(await page.evaluate(() => window.ac.q), undefined, 'the stub queue was replaced by the real ac');
  assert.deepEqual(problems, []);
  await context.close();
});

test('the browser keeps only opaque ids: a customerId cookie (Lax, 1 year) and sessionStorage ids', { timeout: 30_000 }, async () => {
  const { context, page } = await newPage();
  await page.goto(siteUrl('/shop.html'));
  await page.waitForFunction(() => window.isReady);
  await page.evaluate(() => window.hub.identify('jane@example.com', { name: 'Jane' }));
  const cookies = await context.cookies();
  assert.equal(cookies.length, 1);
  const [c] = cookies;
  assert.equal(c.name, 'actionhub_cid');
  assert.match(c.value, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(c.sameSite, 'Lax');
  const days = (c.expires * 1000 - Date.now()) / 86400e3;
  assert.ok(days > 364 && days <= 366, `cookie lasts a year, not ${days} days`);
  const stored = await page.evaluate(() => ({ local: { ...localStorage }, session: { ...sessionStorage } }));
  assert.deepEqual(stored.local, {});
  assert.deepEqual(Object.keys(stored.session).sort(), ['actionhub.cursor', 'actionhub.sid']);
  assert.ok(!JSON.stringify(stored).includes('jane') && !JSON.stringify(cookies).includes('jane'), 'no personal data stored');
  await context.close();
});

test('a navigation in the same tab resumes: the event published between pages arrives once', { timeout: 30_000 }, async () => {
  const { context, page, problems } = await newPage();
  await page.goto(siteUrl('/shop.html'));
  await page.waitForFunction(() => window.isReady && window.hub._cursor);
  const first = await page.evaluate(() => ({ customerId: window.hub.customerId, sessionId: window.hub.sessionId }));
  const ids = { actionId: uuid(), actionMapId: uuid(), ...first };
  const [a] = await post(hub, [lifecycle('offered', ids)]);
  await page.waitForFunction(() => window.got.length === 1);
  await page.goto('about:blank'); // the page is gone; its socket with it
  const [b] = await post(hub, [lifecycle('accepted', ids)]);
  await page.goto(siteUrl('/shop.html'));
  await page.waitForFunction(() => window.got.length >= 1);
  const second = await page.evaluate(() => ({ customerId: window.hub.customerId, sessionId: window.hub.sessionId }));
  assert.deepEqual(second, first, 'same customer cookie and same session in the same tab');
  const [c] = await post(hub, [lifecycle('started', ids)]);
  await page.waitForFunction(() => window.got.length >= 2);
  await new Promise((r) => setTimeout(r, 200));
  const got = await page.evaluate(() => window.got);
  assert.deepEqual(got.map((e) => e.seq), [b.seq, c.seq], 'resumed after the last seq seen: nothing lost, nothing repeated');
  assert.ok(a.seq < b.seq);
  assert.deepEqual(problems, []);
  await context.close();
});

test('dataLayer gets {event, ...fields} pushes through its own push, never replaced', { timeout: 30_000 }, async () => {
  const { context, page, problems } = await newPage();
  await page.goto(siteUrl('/datalayer.html'));
  await page.waitForFunction(() => window.isReady && window.hub._cursor);
  const customerId = await page.evaluate(() => window.hub.customerId);
  const chat = { actionId: uuid(), actionMapId: uuid(), customerId, sessionId: uuid() };
  const offer = { actionId: uuid(), actionMapId: uuid(), customerId, sessionId: chat.sessionId, mediaType: 'contentoffer' };
  await post(hub, [lifecycle('offered', chat), lifecycle('offered', offer), lifecycle('accepted', chat)]);
  await page.waitForFunction(() => window.dataLayer.length === 4);
  const layer = await page.evaluate(() => ({ same: window.dataLayer === window.originalLayer, hooked: window.hooked, items: window.dataLayer }));
  assert.ok(layer.same, 'the array was not replaced');
  assert.equal(layer.hooked, 3, "the tag manager's push saw every event");
  assert.deepEqual(layer.items.map((d) => d.event), ['gtm.js', 'actionhub.webchat:offered', 'actionhub.contentoffer:offered', 'actionhub.webchat:accepted']);
  const pushed = layer.items[1];
  assert.equal(pushed.actionId, chat.actionId);
  assert.equal(pushed.actionMediaType, 'webchat');
  assert.equal(typeof pushed.seq, 'number');
  assert.deepEqual(problems, []);
  await context.close();
});

test('the demo page shows a chat invitation and a content offer and reports their lifecycle', { timeout: 30_000 }, async () => {
  const { context, page, problems } = await newPage();
  await page.goto(siteUrl(`/demo/?hub=${encodeURIComponent(hub.http)}`));
  await page.waitForFunction(() => window.dataLayer.some((d) => d.event === 'actionhub.contentoffer:offered') && window.dataLayer.some((d) => d.event === 'actionhub.webchat:offered'));
  await page.click('#chat-yes');
  await page.click('#offer-no');
  await page.waitForFunction(() => ['webchat:started', 'contentoffer:rejected'].every((t) => window.dataLayer.some((d) => d.event === 'actionhub.' + t)));
  const customerId = await page.evaluate(() => window.actionhub.customerId);
  const view = (await getJson(hub, `/v1/customers/${customerId}`)).body;
  assert.deepEqual(view.actions.map((a) => a.actionState).sort(), ['started']);
  assert.ok((await page.evaluate(() => window.heard)).includes('visitor:page'), 'the queued ac("on") heard the page view');
  assert.deepEqual(problems, []);
  await context.close();
});

test('a hub restart mid-stream loses and duplicates nothing on the page', { timeout: 60_000 }, async () => {
  // Its own hub, restarted on the same port with the same data directory.
  const own = await startHub();
  const { context, page, problems } = await newPage();
  try {
    await page.goto(siteUrl('/shop.html').replace('/shop.html', '/queued.html')); // any page of the site
    await page.setContent(pages['/shop.html'].replaceAll('HUB', own.http));
    await page.waitForFunction(() => window.isReady && window.hub._cursor);
    // The page reports 12 chats through the SDK, each offered -> accepted -> started -> ended,
    // interleaved so that lifecycles straddle the restart; it records every acknowledgement.
    await page.evaluate(() => {
      window.acks = [];
      window.failures = [];
      const mapId = '5d7c6a0e-1b2f-4c3d-8e9f-0a1b2c3d4e5f';
      const chats = Array.from({ length: 12 }, () => window.hub.action('webchat', { actionMapId: mapId }));
      const steps = [];
      for (let round = 0; round < 4 + chats.length; round++) {
        chats.forEach((chat, i) => {
          const stage = round - Math.floor(i / 2);
          const state = ['offered', 'accepted', 'started', 'ended'][stage];
          if (state) steps.push([chat, state]);
        });
      }
      window.stepsTotal = steps.length;
      (async () => {
        for (const [chat, state] of steps) {
          try {
            const ack = await chat[state]();
            window.acks.push({ seq: ack.seq, actionId: chat.actionId, state, duplicate: ack.duplicate });
          } catch (e) {
            window.failures.push(`${state} ${chat.actionId}: ${e.code} ${e.message}`);
          }
          await new Promise((r) => setTimeout(r, 40));
        }
        window.streamDone = true;
      })();
    });
    await page.waitForFunction(() => window.acks.length >= 12);
    await own.stop(); // graceful: connections close with 1001
    const restarted = await startHub({ port: own.port, dataDir: own.dataDir });
    try {
      await page.waitForFunction(() => window.streamDone, null, { timeout: 30_000 });
      const failures = await page.evaluate(() => window.failures);
      const { acks, total } = await page.evaluate(() => ({ acks: window.acks, total: window.stepsTotal }));
      assert.deepEqual(failures, [], 'every report made mid-stream was accepted');
      assert.equal(acks.length, total);
      await page.waitForFunction((n) => window.got.length >= n, acks.length, { timeout: 5000 }).catch(() => {});
      await new Promise((r) => setTimeout(r, 300));
      const got = await page.evaluate(() => window.got);
      const key = (e) => `${e.actionId} ${e.state}`;
      const keys = got.map(key);
      assert.equal(new Set(keys).size, keys.length, 'no event delivered twice');
      assert.deepEqual([...keys].sort(), acks.map(key).sort(), 'every acknowledged report delivered');
    } finally {
      await restarted.dispose();
    }
    // Chromium logs each reconnect attempt that finds the hub still down; those are expected
    // while it restarts (full jitter may retry at once), anything else is a problem.
    const refused = /^WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/v1\/ws' failed: .*ERR_CONNECTION_REFUSED$/;
    assert.deepEqual(problems.filter((p) => !refused.test(p)), []);
  } finally {
    await context.close();
    await own.dispose();
  }
});

// Headless Chromium keeps every tab visible, so the test turns this one's visibility the
// way a switch of tabs does: `document.visibilityState` changes, then `visibilitychange`
// fires; the SDK's own listener and the page's real socket do the rest.
function setVisibility(page, state) {
  return page.evaluate((state) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
    document.dispatchEvent(new Event('visibilitychange'));
  }, state);
}

test('a page hidden and shown again reports its exit, and the sessions view measures its time on page', { timeout: 30_000 }, async () => {
  const { context, page, problems } = await newPage();
  await page.goto(siteUrl('/exits.html'));
  await page.waitForFunction(() => window.viewed);
  const customerId = await page.evaluate(() => window.hub.customerId);
  await new Promise((r) => setTimeout(r, 1300));
  await setVisibility(page, 'hidden');
  const sessions = () => getJson(hub, `/v1/visitors/${customerId}/sessions`);
  const exited = await until(async () => {
    const { body } = await getJson(hub, `/v1/visitors/${customerId}/events`);
    return body.events.map((frame) => frame.event).find((e) => e.type === 'exit');
  });
  assert.equal(exited.page.url, siteUrl('/exits.html'), 'the exit names the page left');
  await setVisibility(page, 'visible');
  // Time spent away after the exit is not time on the page.
  await new Promise((r) => setTimeout(r, 1300));
  const { body } = await sessions();
  const [viewed] = body.sessions[0].pages;
  assert.equal(viewed.url, siteUrl('/exits.html'));
  assert.equal(viewed.timeOnPage, 1, `measured from the view to the exit: ${JSON.stringify(body.sessions[0])}`);
  assert.deepEqual(problems, []);
  await context.close();
});
