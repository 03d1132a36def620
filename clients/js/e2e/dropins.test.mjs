// Each drop-in in headless Chromium: the example page of examples/browser, a site's page
// with its original snippet where only the script URL (or tag) changed, works unchanged
// against a real hub: queued calls replayed, every command recorded as the mapping says, no
// error and no unhandled rejection on the page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHub, getJson, until } from '../test/hub.mjs';
import { launchBrowser, startSite, newPage } from './site.mjs';

let hub;
let site;
let browser;

const pages = {
  // A page whose own script already owns `ac`: the SDK must leave it alone, and say so.
  '/owned.html': `<!doctype html><title>owned</title><script>
    window.ac = function theirAc(cmd) { return 'theirs:' + cmd; };
  </script><script src="HUB/sdk/actionhub.js?ac&amp;gt"></script>`, // &amp;: in an attribute, &gt is an entity
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

/** The visitor events the hub recorded for the page's customer, once `n` are there. */
async function recorded(page, n) {
  await page.waitForFunction(() => window.actionhub && window.actionhub.connected);
  const customerId = await page.evaluate(() => window.actionhub.customerId);
  return until(async () => {
    const { body } = await getJson(hub, `/v1/customers/${customerId}/events`);
    const events = (body.events || []).map((f) => f.event).filter((e) => e.type);
    return events.length >= n && events;
  }, 5000, `${n} visitor events`);
}

test('Predictive Engagement: the ac snippet with only its script URL changed', { timeout: 30_000 }, async () => {
  const { context, page, problems, notes } = await newPage(browser);
  await page.goto(site.url('/examples/predictive-engagement.html'));
  await page.click('#add');
  const events = await recorded(page, 2);
  assert.deepEqual(events.map((e) => e.type), ['page', 'track']);
  assert.equal(events[0].page.url, site.url('/examples/predictive-engagement.html'));
  assert.equal(events[0].page.title, 'Acme Outdoor · Trail tents');
  assert.deepEqual([events[1].name, events[1].properties], ['product_added', { sku: 'TENT-2P', price: 249 }]);
  // The queued ac('on') hears the page's own web chat.
  await page.evaluate(() => window.actionhub.action('webchat', { actionMapId: '6f1c1a52-3b8e-4c1d-9a63-1f0f3a1e2b11' }).offered());
  await page.waitForFunction(() => (window.analytics || []).some((e) => e.topic === 'webchat:offered'));
  // init, load and forms:track each leave one note; an unknown command one warning.
  await page.evaluate(() => (ac('bogus'), ac('bogus'), ac('load', 'other')));
  const mine = notes.filter((n) => n.startsWith('actionhub:'));
  assert.equal(mine.filter((n) => n.includes('"init"')).length, 1, mine.join('\n'));
  assert.equal(mine.filter((n) => n.includes('"load"')).length, 1, mine.join('\n'));
  assert.equal(mine.filter((n) => n.includes('forms:track')).length, 1, mine.join('\n'));
  assert.equal(mine.filter((n) => n.includes('"bogus"')).length, 1, mine.join('\n'));
  assert.deepEqual(problems, []);
  await context.close();
});

test('Web Engagement: the _gt snippet with only its script URL changed', { timeout: 30_000 }, async () => {
  const { context, page, problems } = await newPage(browser);
  await page.goto(site.url('/examples/web-engagement.html'));
  await page.waitForFunction(() => window.actionhub && window.actionhub.connected);
  await page.click('#signin');
  await page.click('#cart');
  await page.click('#signout');
  const events = await recorded(page, 4);
  assert.deepEqual(events.map((e) => e.type), ['page', 'signin', 'track', 'signout']);
  assert.equal(events[1].userId, 'jane@example.com');
  assert.deepEqual(events[1].traits, { firstName: 'Jane' });
  assert.deepEqual([events[2].name, events[2].properties], ['AddToCart', { productName: 'Trail tent', productPrice: '249' }]);
  assert.deepEqual(problems, []);
  await context.close();
});

test('Transactional Support: the widget snippet with only its script tag changed', { timeout: 30_000 }, async () => {
  const { context, page, problems } = await newPage(browser);
  await page.goto(site.url('/examples/transactional-support.html'));
  await page.waitForFunction(() => window.actionhub && window.actionhub.connected);
  await page.click('#upgrade');
  await page.click('#route');
  await page.click('#buy');
  const events = await recorded(page, 4);
  // The snippet's update is the hub's own update event: attributes for the current visitor.
  assert.deepEqual(events.map((e) => e.type), ['identify', 'update', 'page', 'track']);
  assert.equal(events[0].userId, 'user-123');
  assert.deepEqual(events[1].attributes, { plan: 'enterprise', monthlySpend: 2000 });
  // A browser's page view carries its time zone, for the visitor's profile.
  const { timezone, ...shown } = events[2].page;
  assert.deepEqual(shown, { url: site.url('/dashboard'), title: 'User Dashboard' });
  assert.equal(timezone, await page.evaluate(() => Intl.DateTimeFormat().resolvedOptions().timeZone));
  assert.equal(events[3].name, 'purchase_completed');
  const customerId = await page.evaluate(() => window.actionhub.customerId);
  const visitor = (await getJson(hub, `/v1/visitors/${customerId}`)).body;
  assert.equal(visitor.attributes.plan, 'enterprise');
  assert.deepEqual(problems, []);
  await context.close();
});

test("a global another script owns is left alone, and the console says so", { timeout: 30_000 }, async () => {
  const { context, page, problems, notes } = await newPage(browser);
  await page.goto(site.url('/owned.html'));
  await page.waitForFunction(() => window.actionhub && window.actionhub.connected);
  assert.equal(await page.evaluate(() => ac('x')), 'theirs:x');
  assert.equal(await page.evaluate(() => typeof window._gt.push), 'function', 'the unclaimed _gt is installed');
  assert.ok(notes.some((n) => /window\.ac belongs to another script/.test(n)), notes.join('\n'));
  assert.deepEqual(problems, []);
  await context.close();
});
