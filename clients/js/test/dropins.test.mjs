// The three drop-in command APIs against a real hub: each command's mapping to the events
// the hub records, queued calls replayed in order, no unhandled rejection, and globals
// another script owns left alone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ActionHub, acCommands, installAc, installGt, installTransactional } from '../src/index.mjs';
import { getJson, until, hubForTests } from './hub.mjs';

const ctx = hubForTests(ActionHub);
const client = () => ctx.client();
const unhandled = [];
const onUnhandled = (e) => unhandled.push(e);
before(() => process.on('unhandledRejection', onUnhandled));
after(() => process.off('unhandledRejection', onUnhandled));

/** The console lines written while `run` runs, by level. */
async function capturing(run) {
  const lines = { info: [], warn: [] };
  const saved = { info: console.info, warn: console.warn };
  console.info = (...a) => lines.info.push(a.join(' '));
  console.warn = (...a) => lines.warn.push(a.join(' '));
  try {
    await run();
  } finally {
    Object.assign(console, saved);
  }
  return lines;
}

/** The customer's events as the hub recorded them, once `n` are there. */
async function recorded(customerId, n) {
  return until(async () => {
    const { body } = await getJson(ctx.hub, `/v1/customers/${customerId}/events`);
    const visitor = (body.events || []).map((f) => f.event).filter((e) => e.type);
    return visitor.length >= n && visitor;
  }, 5000, `${n} visitor events of ${customerId}`);
}

test("ac: pageview is a page view, record a track event; init, load and forms:track note once; unknown commands warn once", async () => {
  const c = client();
  const ac = acCommands(c);
  const lines = await capturing(async () => {
    assert.equal(ac('init', 'org-1', { region: 'use1' }), undefined);
    ac('init', 'org-1', { region: 'use1' });
    ac('load', 'autotrackClick');
    ac('forms:track', '#signup');
    ac('forms:track', '#other');
    assert.equal(ac('bogus', 1), undefined);
    ac('bogus', 2);
    ac('alsoBogus');
    await ac('pageview', { location: 'https://shop.example/tents', title: 'Tents' });
    await ac('record', 'product_added', { sku: 'T-1', price: 30 });
  });
  assert.equal(lines.info.length, 3, lines.info.join('\n'));
  assert.ok(lines.info.some((l) => l.includes('"init"')) && lines.info.some((l) => l.includes('forms:track')));
  assert.equal(lines.warn.length, 2, lines.warn.join('\n'));
  assert.ok(lines.warn[0].includes('"bogus"'));
  const [page, track] = await recorded(c.customerId, 2);
  assert.equal(page.type, 'page');
  assert.deepEqual(page.page, { url: 'https://shop.example/tents', title: 'Tents' });
  assert.equal(track.type, 'track');
  assert.equal(track.name, 'product_added');
  assert.deepEqual(track.properties, { sku: 'T-1', price: 30 });
});

test('ac: a refused command reaches the error handlers, never an unhandled rejection', async () => {
  const c = client();
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const ac = acCommands(c);
  ac('record', ''); // an empty name is invalid_event
  ac('on', 'webchat:all'); // no callback: a TypeError, not thrown into the page
  await until(() => errors.length === 2, 3000, 'both errors');
  assert.ok(errors.some((e) => e.code === 'invalid_event'));
  assert.ok(errors.some((e) => e instanceof TypeError));
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(unhandled, []);
});

test('ac: the stub queue is replayed in order, and ac(on) still receives events', async () => {
  const c = client();
  const got = [];
  globalThis.ac = function () { (globalThis.ac.q = globalThis.ac.q || []).push(arguments); };
  globalThis.ac.t = Date.now();
  globalThis.ac('init', 'org-1');
  globalThis.ac('on', 'visitor:track', { customerId: [c.customerId] }, (e) => got.push(e.name));
  globalThis.ac('pageview', { location: 'https://shop.example/' });
  try {
    const ac = installAc(c);
    assert.equal(globalThis.ac, ac);
    await c.ready();
    await until(() => [...c._groups.values()].every((g) => g.sub !== null) && c._cursor, 3000, 'subscribed');
    ac('record', 'clicked');
    await until(() => got.length === 1, 3000, 'the queued handler heard the track event');
    const [page] = await recorded(c.customerId, 2);
    assert.equal(page.type, 'page');
  } finally {
    delete globalThis.ac;
  }
});

test("a global another script owns is left alone, said once on the console", async () => {
  const c = client();
  const theirs = (globalThis.ac = function ac(cmd) { return 'their ' + cmd; });
  const theirGt = (globalThis._gt = { push: () => 'theirs' });
  try {
    const lines = await capturing(() => {
      installAc(c);
      installGt(c);
    });
    assert.equal(globalThis.ac, theirs);
    assert.equal(globalThis._gt, theirGt);
    assert.equal(lines.warn.length, 2, lines.warn.join('\n'));
    assert.match(lines.warn[0], /window\.ac belongs to another script/);
  } finally {
    delete globalThis.ac;
    delete globalThis._gt;
  }
});

test('_gt: queued pushes replay after the page entered; SignIn, UserInfo, SignOut and business events map to visitor events', async () => {
  const c = client();
  globalThis._gt = [];
  globalThis._gt.push(['config', { name: 'site', httpEndpoint: 'http://gwe.example:9081' }]);
  globalThis._gt.push(['sendSignIn', { userId: 'jane', firstName: 'Jane' }]);
  try {
    // Node has no page to have entered: the browser tests cover the automatic PageEntered.
    const lines = await capturing(() => installGt(c, '_gt', { pageEntered: false }));
    assert.equal(lines.info.length, 1, 'config is noted');
    globalThis._gt.push(['event', 'PageEntered', { data: { url: 'https://shop.example/cart' } }]);
    const before = c.sessionId;
    globalThis._gt.push(['event', { eventName: 'AddToCart', productName: 'Sony' }]);
    globalThis._gt.push(['event', 'Checkout', { data: { total: 10 } }]);
    globalThis._gt.push(['sendUserInfo', { userId: 'jane' }]);
    globalThis._gt.push(['sendSignOut']);
    globalThis._gt.push(['event', 'PageExited']);
    const events = await recorded(c.customerId, 7);
    assert.deepEqual(events.map((e) => e.type), ['signin', 'page', 'track', 'track', 'userinfo', 'signout', 'track']);
    assert.equal(events[0].userId, 'jane');
    assert.deepEqual(events[0].traits, { firstName: 'Jane' });
    assert.equal(events[1].page.url, 'https://shop.example/cart');
    assert.equal(events[2].name, 'AddToCart');
    assert.deepEqual(events[2].properties, { productName: 'Sony' });
    assert.deepEqual([events[3].name, events[3].properties], ['Checkout', { total: 10 }]);
    assert.equal(events[6].name, 'PageExited');
    assert.notEqual(c.sessionId, before, 'signout starts a fresh session');
    const view = (await getJson(ctx.hub, `/v1/customers/${c.customerId}`)).body;
    assert.equal(view.identity.state, 'anonymous');
  } finally {
    delete globalThis._gt;
  }
});

test("TransactionalSupport: identify, update (the hub's update event), trackPageView, trackEvent", async () => {
  const c = client();
  globalThis.TransactionalSupport = function () { (globalThis.TransactionalSupport.q = globalThis.TransactionalSupport.q || []).push(arguments); };
  const early = globalThis.TransactionalSupport;
  const lines = await capturing(async () => {
    early('update', { plan: 'free' }); // before identify: the anonymous visitor's attributes
    early('identify', 'user-123', { name: 'John Doe', email: 'john@example.com' });
    try {
      const ts = installTransactional(c);
      ts('update', { plan: 'enterprise', monthlySpend: 2000 });
      ts('trackPageView', { page: 'https://shop.example/dashboard', title: 'User Dashboard' });
      ts('trackEvent', 'purchase_completed', { orderId: '12345', amount: 99.99 });
      assert.equal(ts('nope'), undefined);
    } finally {
      delete globalThis.TransactionalSupport;
    }
  });
  assert.equal(lines.info.length, 0, lines.info.join('\n'));
  assert.equal(lines.warn.length, 1, lines.warn.join('\n'));
  const events = await recorded(c.customerId, 5);
  assert.deepEqual(events.map((e) => e.type), ['update', 'identify', 'update', 'page', 'track']);
  assert.deepEqual(events[0].attributes, { plan: 'free' });
  assert.equal(events[1].userId, 'user-123');
  assert.deepEqual(events[2].attributes, { plan: 'enterprise', monthlySpend: 2000 });
  assert.deepEqual(events[3].page, { url: 'https://shop.example/dashboard', title: 'User Dashboard' });
  assert.equal(events[4].name, 'purchase_completed');
  const visitor = (await getJson(ctx.hub, `/v1/visitors/${c.customerId}`)).body;
  assert.equal(visitor.attributes.plan, 'enterprise');
  assert.equal(visitor.attributes.monthlySpend, 2000);
  assert.equal(visitor.email, 'john@example.com');
});
