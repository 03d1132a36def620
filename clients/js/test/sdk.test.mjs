// SDK logic against a real hub (node --experimental-websocket --test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ActionHub, ActionHubError } from '../src/actionhub.mjs';
import { startHub, post, getJson, until, uuid, lifecycle, hubForTests, recordingSocket, actionIds } from './hub.mjs';

const ctx = hubForTests(ActionHub);

const client = ctx.client;

const ids = actionIds;

test('on() delivers events with seq, topic and timestamp; one server subscription serves many handlers', async () => {
  const frames = [];
  const c = client({ WebSocket: recordingSocket(frames) });
  const a = [];
  const b = [];
  c.on('webchat:all', (e) => a.push(e));
  c.on('webchat:all', (e) => b.push(e));
  await c.ready();
  await until(() => c._groups.get('webchat:all|').sub !== null && c._cursor !== null, 3000, 'subscribed');
  const x = ids();
  const [r1] = await post(ctx.hub, [lifecycle('offered', x)]);
  await post(ctx.hub, [{ type: 'track', customerId: x.customerId, name: 'not-a-webchat' }]);
  await until(() => a.length === 1 && b.length === 1, 3000, 'delivery');
  assert.equal(a[0].seq, r1.seq);
  assert.equal(a[0].topic, 'webchat:offered');
  assert.match(a[0].timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(a[0].actionId, x.actionId);
  assert.equal(a[0].customerIdType, 'cookie');
  assert.notEqual(a[0], b[0], 'each handler gets its own copy');
  assert.equal(frames.filter((f) => f.op === 'subscribe').length, 1);
});

test('where filters per handler, even when subscriptions overlap', async () => {
  const c = client();
  const x = ids();
  const y = ids();
  const onlyX = [];
  const every = [];
  c.on('webchat:all', { customerId: [x.customerId] }, (e) => onlyX.push(e.customerId));
  c.on('all', (e) => e.actionId && every.push(e.customerId));
  await c.ready();
  await until(() => [...c._groups.values()].every((g) => g.sub !== null) && c._cursor !== null, 3000, 'subscribed');
  await new Promise((r) => setTimeout(r, 100));
  await post(ctx.hub, [lifecycle('offered', y), lifecycle('offered', x)]);
  await until(() => every.length === 2, 3000, 'both events');
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(onlyX, [x.customerId]);
});

test('once() fires once; off() removes handlers and the server subscription', async () => {
  const frames = [];
  const c = client({ WebSocket: recordingSocket(frames) });
  const got = [];
  c.once('contentoffer:offered', (e) => got.push(e.seq));
  const kept = (e) => got.push(-e.seq);
  c.on('contentoffer:accepted', kept);
  await c.ready();
  await until(() => frames.filter((f) => f.op === 'subscribe').length === 2, 3000, 'subscribes');
  await new Promise((r) => setTimeout(r, 100));
  const x = { ...ids(), mediaType: 'contentoffer' };
  const y = { ...ids(), mediaType: 'contentoffer' };
  await post(ctx.hub, [lifecycle('offered', x), lifecycle('offered', y)]);
  await until(() => got.length >= 1, 3000, 'once');
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(got.length, 1, 'once fired exactly once');
  assert.ok(frames.some((f) => f.op === 'unsubscribe'), 'the once group was unsubscribed');
  c.off('contentoffer:accepted', kept);
  assert.equal(frames.filter((f) => f.op === 'unsubscribe').length, 2);
  await post(ctx.hub, [lifecycle('accepted', x)]);
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(got.length, 1);
});

test('publish resolves {seq, duplicate}; a retried eventId is a duplicate; refusals reject with the code', async () => {
  const c = client();
  const x = ids();
  const ev = { ...lifecycle('offered', x), eventId: 'retry-1' };
  const first = await c.publish(ev);
  assert.equal(first.duplicate, false);
  assert.ok(first.seq > 0);
  const again = await c.publish(ev);
  assert.deepEqual(again, { seq: first.seq, duplicate: true });
  await assert.rejects(c.publish({ ...lifecycle('offered', x), bogus: 1 }), (e) => e instanceof ActionHubError && e.code === 'invalid_event');
  await assert.rejects(c.publish(lifecycle('engaged', x)), (e) => e.code === 'invalid_transition');
});

test('action() reports each lifecycle state with every id filled for the page customer and session', async () => {
  const customerId = uuid();
  const c = client({ customerId });
  const mapId = uuid();
  const chat = c.action('webchat', { actionMapId: mapId, actionMapVersion: 3 });
  assert.deepEqual(
    Object.keys(chat).filter((k) => typeof chat[k] === 'function').sort(),
    ['accepted', 'ended', 'engaged', 'errored', 'ignored', 'offered', 'qualified', 'rejected', 'started', 'timedout'],
  );
  assert.ok((await chat.offered()).seq > 0);
  await chat.accepted({ conversationId: 'c-1' });
  await chat.started();
  await chat.engaged();
  await chat.ended();
  await assert.rejects(chat.engaged(), (e) => e.code === 'action_terminal');
  const { body } = await getJson(ctx.hub, `/v1/actions/${chat.actionId}`);
  assert.equal(body.actionState, 'ended');
  assert.equal(body.customerId, customerId);
  assert.equal(body.sessionId, c.sessionId);
  assert.equal(body.actionMapVersion, 3);
  assert.deepEqual(body.transitions.map((t) => t.actionState), ['offered', 'accepted', 'started', 'engaged', 'ended']);

  const offer = c.action('contentoffer', { actionMapId: mapId });
  assert.equal(offer.started, undefined, 'content offers have no started state');
  await offer.offered();
  await offer.errored(500, 'render failed');
  const after = (await getJson(ctx.hub, `/v1/actions/${offer.actionId}`)).body;
  assert.equal(after.errorCode, 500);
  assert.equal(after.errorMessage, 'render failed');
  assert.throws(() => c.action('sms', { actionMapId: mapId }), ActionHubError);
});

test('visitor calls: identify, signin rotates the session, userinfo, page, track, signout', async () => {
  const customerId = uuid();
  const c = client({ customerId });
  const first = c.sessionId;
  await c.page({ url: 'https://shop.example/', title: 'Shop' });
  await c.identify('user-7', { plan: 'gold' });
  assert.equal((await getJson(ctx.hub, `/v1/customers/${customerId}`)).body.identity.state, 'recognized');
  await c.signin('user-7');
  assert.notEqual(c.sessionId, first, 'signin starts a new session');
  let view = (await getJson(ctx.hub, `/v1/customers/${customerId}`)).body;
  assert.equal(view.identity.state, 'authenticated');
  assert.equal(view.identity.userId, 'user-7');
  assert.equal(view.currentSessionId, c.sessionId);
  await c.track('added-to-cart', { sku: 'A1' });
  const signedIn = c.sessionId;
  await c.signout();
  assert.notEqual(c.sessionId, signedIn);
  view = (await getJson(ctx.hub, `/v1/customers/${customerId}`)).body;
  assert.equal(view.identity.state, 'anonymous');
  await c.userinfo('user-7');
  view = (await getJson(ctx.hub, `/v1/customers/${customerId}`)).body;
  assert.equal(view.identity.state, 'recognized');
  const events = (await getJson(ctx.hub, `/v1/customers/${customerId}/events`)).body.events.map((f) => f.topic);
  for (const t of ['visitor:page', 'visitor:identify', 'visitor:signin', 'visitor:track', 'visitor:signout', 'visitor:userinfo']) {
    assert.ok(events.includes(t), `${t} in ${events}`);
  }
});

test('snapshot(where) returns the current actions and customers', async () => {
  const c = client();
  const x = ids();
  await post(ctx.hub, [lifecycle('offered', x), lifecycle('accepted', x)]);
  const snap = await c.snapshot({ customerId: [x.customerId] });
  assert.equal(snap.actions.length, 1);
  assert.equal(snap.actions[0].actionState, 'accepted');
  assert.equal(snap.customers[0].customerId, x.customerId);
});

test('errors reach the error handler: a bad pattern is refused, not silently ignored', async () => {
  const c = client();
  const errors = [];
  c.on('error', (e) => errors.push(e));
  c.on('webchat:bogus', () => {});
  await until(() => errors.length, 3000, 'error');
  assert.equal(errors[0].code, 'bad_request');
  assert.equal(c._groups.size, 0, 'the refused handler group is dropped');
});

test('reconnect resumes with since+epoch: nothing lost, nothing duplicated; offline publishes are sent', async () => {
  const frames = [];
  const c = client({ WebSocket: recordingSocket(frames) });
  const seen = [];
  const x = ids();
  c.on('webchat:all', { customerId: [x.customerId] }, (e) => seen.push(e.seq));
  await c.ready();
  await until(() => c._cursor !== null, 3000, 'subscribed');
  const [r1] = await post(ctx.hub, [lifecycle('offered', x)]);
  await until(() => seen.length === 1, 3000, 'first');
  const disconnected = new Promise((r) => c.once('disconnected', r));
  frames.last.close(); // the network drops
  await disconnected;
  const [r2] = await post(ctx.hub, [lifecycle('accepted', x)]); // published while this tab was away
  const offline = c.publish(lifecycle('started', x)); // queued, then sent on reconnect
  const result = await offline;
  assert.equal(result.duplicate, false);
  await until(() => seen.length === 3, 5000, 'replayed and live events');
  await new Promise((r) => setTimeout(r, 150));
  assert.deepEqual(seen, [r1.seq, r2.seq, result.seq]);
  const resume = frames.filter((f) => f.op === 'subscribe').at(-1);
  assert.equal(resume.since, r1.seq);
  assert.equal(resume.epoch, c.epoch);
  assert.equal(frames.sockets, 2);
});

test('the offline publish queue is bounded', async () => {
  const c = client({ autoConnect: false, maxQueue: 2 });
  const x = ids();
  const p1 = c.publish(lifecycle('offered', x));
  const p2 = c.publish(lifecycle('accepted', x));
  await assert.rejects(c.publish(lifecycle('started', x)), (e) => e.code === 'queue_full');
  c.close();
  await assert.rejects(p1, (e) => e.code === 'closed');
  await assert.rejects(p2, (e) => e.code === 'closed');
});

test('a new page in the same tab (same sessionStorage) resumes from the last seq seen', async () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
  const x = ids();
  const first = client({ storage, customerId: x.customerId });
  const seen1 = [];
  first.on('webchat:all', { customerId: [x.customerId] }, (e) => seen1.push(e.seq));
  await first.ready();
  await until(() => first._cursor !== null, 3000, 'subscribed');
  const [a] = await post(ctx.hub, [lifecycle('offered', x)]);
  await until(() => seen1.length === 1, 3000, 'first page event');
  const sid = first.sessionId;
  first.close(); // the page unloads
  const [b] = await post(ctx.hub, [lifecycle('accepted', x)]); // between pages
  const second = client({ storage, customerId: x.customerId });
  assert.equal(second.sessionId, sid, 'same tab, same session');
  const seen2 = [];
  second.on('webchat:all', { customerId: [x.customerId] }, (e) => seen2.push(e.seq));
  await until(() => seen2.length === 1, 3000, 'the event between pages');
  const [c3] = await post(ctx.hub, [lifecycle('started', x)]);
  await until(() => seen2.length === 2, 3000, 'live after resume');
  assert.deepEqual(seen2, [b.seq, c3.seq]);
  assert.ok(a.seq < b.seq);
});

test('a position from another epoch falls back to a snapshot, delivered as current states, recovered: false', async () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
  const x = ids();
  const first = client({ storage });
  first.on('webchat:all', { customerId: [x.customerId] }, () => {});
  await until(() => store.has('actionhub.cursor') && Object.keys(JSON.parse(store.get('actionhub.cursor'))).length, 3000, 'a stored position');
  first.close();
  // The hub's history is gone (another epoch): the stored position cannot be resumed.
  const positions = JSON.parse(store.get('actionhub.cursor'));
  for (const id of Object.keys(positions)) positions[id] = { seq: 999999, epoch: 'gone' };
  store.set('actionhub.cursor', JSON.stringify(positions));
  await post(ctx.hub, [lifecycle('offered', x), lifecycle('accepted', x)]);
  const c = client({ storage });
  const seen = [];
  const subscribed = [];
  c.on('subscribed', (s) => subscribed.push(s));
  c.on('webchat:all', { customerId: [x.customerId] }, (e) => seen.push(e));
  await until(() => seen.length === 1, 3000, 'snapshot state');
  assert.equal(seen[0].topic, 'webchat:accepted');
  assert.equal(seen[0].actionId, x.actionId);
  assert.equal(subscribed.length, 1);
  assert.equal(subscribed[0].wasRecovering, true);
  assert.equal(subscribed[0].recovered, false);
  await until(() => Object.values(JSON.parse(store.get('actionhub.cursor'))).every((p) => p.epoch === c.epoch), 3000, 'position in the new epoch');
});

test('credentials: apiKey and getToken go in connect; getToken is asked again after 4001', async () => {
  const frames = [];
  const k = client({ apiKey: 'key-1', WebSocket: recordingSocket(frames) });
  await k.ready();
  assert.equal(frames[0].op, 'connect');
  assert.equal(frames[0].apiKey, 'key-1');
  assert.equal(frames[0].token, undefined);

  const asked = [];
  const tframes = [];
  const t = client({
    WebSocket: recordingSocket(tframes),
    getToken: async (cid) => {
      asked.push(cid);
      return { token: `tok-${asked.length}`, expiresAt: new Date(Date.now() + 3600e3).toISOString() };
    },
  });
  await t.ready();
  assert.deepEqual(asked, [t.customerId]);
  assert.equal(tframes[0].token, 'tok-1');
  // The hub would close an expired token's connection with 4001; simulate that close.
  const sock = tframes.last;
  sock.onclose({ code: 4001, reason: 'token expired' });
  sock.close();
  await until(() => tframes.filter((f) => f.op === 'connect').length === 2, 3000, 'reconnect with a new token');
  assert.equal(tframes.filter((f) => f.op === 'connect')[1].token, 'tok-2');
});

test("a token links only its own user: signin with another user fetches that user's token first", async () => {
  const secret = 'sdk-test-secret-0123456789abcdef0123456789';
  const key = 'sdk-test-key';
  const secured = await startHub({ args: ['--api-keys', `${key}=publish+subscribe`, '--jwt-secrets', secret] });
  try {
    const asked = [];
    // The site's backend: mints a token for the customer (and the user its login vouches for).
    const getToken = async (customerId, want = {}) => {
      asked.push(want.userId ?? null);
      const r = await fetch(`${secured.http}/v1/tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': key },
        body: JSON.stringify({ customerId, ...(want.userId ? { userId: want.userId } : {}) }),
      });
      assert.equal(r.status, 200);
      return r.json();
    };
    const frames = [];
    const c = new ActionHub({ url: secured.ws, backoff: { min: 50, max: 400 }, getToken, WebSocket: recordingSocket(frames) });
    ctx.clients.push(c);
    await c.ready();
    assert.equal(c.tokenUserId, null);
    // Called back to back: the signin waits for its user's token, the page view waits for
    // the signin, and the hub takes both.
    const signedIn = c.signin('user-9');
    const viewed = c.page({ url: 'https://shop.example/after' });
    const [signin, page] = await Promise.all([signedIn, viewed]);
    assert.ok(page.seq > signin.seq, 'the page view left after the signin');
    assert.deepEqual(asked, [null, 'user-9']);
    assert.equal(c.tokenUserId, 'user-9');
    assert.ok(frames.some((f) => f.op === 'refresh'), 'the live connection swapped its token');
    // A userId left out is the token's.
    await c.identify(undefined, { plan: 'gold' });
    const r = await fetch(`${secured.http}/v1/customers/${c.customerId}`, { headers: { 'x-api-key': key } });
    const view = await r.json();
    assert.equal(view.identity.state, 'authenticated');
    assert.equal(view.identity.userId, 'user-9');

    // Without getToken, a token that does not carry the user is refused by the hub.
    const minted = await getToken(uuid());
    const plain = new ActionHub({ url: secured.ws, backoff: { min: 50, max: 400 }, token: minted.token, customerId: jwtSub(minted.token) });
    ctx.clients.push(plain);
    plain.on('error', () => {});
    await plain.ready();
    await assert.rejects(plain.identify('user-9'), (e) => e instanceof ActionHubError && e.code === 'forbidden' && e.details?.field === 'userId');
  } finally {
    await secured.dispose();
  }
});

function jwtSub(token) {
  return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub;
}

test('reconnects back off with full jitter: each delay anywhere below a doubling ceiling', async () => {
  const times = [];
  class Refused {
    constructor() {
      times.push(Date.now());
      this.readyState = 0;
      setTimeout(() => this.onclose?.({ code: 1006, reason: '' }), 0);
    }
    close() {}
  }
  const states = [];
  const c = client({ WebSocket: Refused, backoff: { min: 40, max: 320 } });
  c.on('error', () => {});
  c.on('connecting', () => states.push('connecting'));
  c.on('disconnected', (d) => states.push(`disconnected ${d.code} ${d.reconnect}`));
  await until(() => times.length >= 7, 8000, 'attempts');
  c.close();
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  const ceilings = [40, 80, 160, 320, 320, 320];
  gaps.forEach((gap, i) => assert.ok(gap <= ceilings[i] + 60, `gap ${i} = ${gap} <= ${ceilings[i]}`));
  // Each failed attempt is a connecting, then a disconnected that will reconnect.
  assert.deepEqual(states.slice(0, 4), ['connecting', 'disconnected 1006 true', 'connecting', 'disconnected 1006 true']);
  assert.equal(c.state, 'closed');
});

test('the ctx.hub serves the built SDK and the console from its binary, without credentials', async () => {
  for (const [path, file] of [['/sdk/actionhub.mjs', 'dist/actionhub.mjs'], ['/sdk/actionhub.js', 'dist/actionhub.js']]) {
    const r = await fetch(ctx.hub.http + path);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    const local = readFileSync(new URL('../' + file, import.meta.url), 'utf8');
    assert.equal(await r.text(), local, `${path} is the current build (rebuild the ctx.hub after npm run build)`);
  }
  const page = await fetch(ctx.hub.http + '/console/');
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type'), /^text\/html/);
  assert.match(await page.text(), /actionhub/);
  for (const [path, type] of [['/console/app.js', /^text\/javascript/], ['/console/style.css', /^text\/css/]]) {
    const r = await fetch(ctx.hub.http + path);
    assert.equal(r.status, 200, path);
    assert.match(r.headers.get('content-type'), type);
  }
  const redirect = await fetch(ctx.hub.http + '/console', { redirect: 'manual' });
  assert.equal(redirect.status, 308);
});

test('update merges attributes and a company into the visitor; exit closes the page last reported', async () => {
  const customerId = uuid();
  const c = client({ customerId });
  await c.update({ plan: 'trial' });
  await c.identify('user-upd', { name: 'Una' });
  await c.update({ plan: 'pro' }, { id: 'acme', name: 'Acme' });
  const visitor = (await getJson(ctx.hub, `/v1/visitors/${customerId}`)).body;
  assert.deepEqual(visitor.attributes, { plan: 'pro' });
  assert.equal(visitor.name, 'Una');
  assert.deepEqual(visitor.company, { id: 'acme', name: 'Acme' });
  assert.equal((await getJson(ctx.hub, '/v1/companies/acme')).body.visitorCount, 1);
  await c.page({ url: 'https://shop.example/a' });
  await c.exit();
  const { body } = await getJson(ctx.hub, `/v1/visitors/${customerId}/events`);
  const exit = body.events.map((f) => f.event).find((e) => e.type === 'exit');
  assert.deepEqual(exit.page, { url: 'https://shop.example/a' }, 'the page last reported');
  assert.equal(exit.sessionId, c.sessionId);
  await assert.rejects(c.update('not an object'), (e) => e instanceof ActionHubError && e.code === 'invalid_event');
});
