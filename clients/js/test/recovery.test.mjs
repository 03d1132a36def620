// Recovery against a real hub: each subscription resumes from its own position, the page
// is told whether a resume recovered everything, connection and subscription states are
// announced, a token is refreshed before it expires without a reconnect, and history()
// reads GET /v1/events.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ActionHub, ActionHubError } from '../src/index.mjs';
import { startHub, post, until, lifecycle, hubForTests, recordingSocket, actionIds } from './hub.mjs';

const ctx = hubForTests(ActionHub);

const client = ctx.client;

const ids = actionIds;
const allSubscribed = (c) => c.subscriptions().every((s) => s.state === 'subscribed');

test('each subscription resumes from its own position: a connection lost mid-replay skips nothing of it', async () => {
  const frames = [];
  const x = ids();
  const y = ids();
  // The second connection is cut as soon as the second subscription's replay has begun.
  const c = client({ WebSocket: recordingSocket(frames, (f, socket) => socket === 2 && f.type === 'event' && f.event.customerId === y.customerId) });
  c.on('error', () => {});
  const gotX = [];
  const gotY = [];
  c.on('webchat:all', { customerId: [x.customerId] }, (e) => gotX.push(e.seq));
  c.on('all', { customerId: [y.customerId] }, (e) => gotY.push(e.seq));
  await until(() => c.connected && allSubscribed(c), 3000, 'subscribed');
  const [first] = await post(ctx.hub, [lifecycle('offered', x)]);
  await until(() => gotX.length === 1, 3000, 'live event');
  const down = new Promise((r) => c.once('disconnected', r));
  frames.offline = true;
  frames.last.close();
  await down;
  // While the page is away: a long history for y (several replay chunks), then one event for x.
  const many = Array.from({ length: 300 }, (_, i) => ({ type: 'track', customerId: y.customerId, name: `t${i}` }));
  const ys = (await post(ctx.hub, many)).map((r) => r.seq);
  const [later] = await post(ctx.hub, [lifecycle('accepted', x)]);
  frames.offline = false;
  await until(() => frames.sockets === 3 && allSubscribed(c) && gotY.length === ys.length, 8000, 'the third connection replays the rest');
  assert.deepEqual(gotY, ys, "y's events, each once, in order");
  assert.deepEqual(gotX, [first.seq, later.seq]);
  // The third connection resumed each subscription from its own position.
  const resumes = frames.filter((f) => f.op === 'subscribe').slice(-2);
  const bySince = Object.fromEntries(resumes.map((f) => [f.where.customerId[0], f.since]));
  assert.equal(bySince[x.customerId], later.seq);
  assert.ok(bySince[y.customerId] < later.seq && bySince[y.customerId] >= ys[0], `y resumed inside its replay (${bySince[y.customerId]})`);
});

test('connection and subscription states are announced; a resume says it recovered', async () => {
  const frames = [];
  const c = client({ WebSocket: recordingSocket(frames) });
  const log = [];
  for (const name of ['connecting', 'connected', 'disconnected']) c.on(name, (i) => log.push(name + (name === 'disconnected' ? ` ${i.reconnect}` : '')));
  for (const name of ['subscribing', 'subscribed', 'unsubscribed']) c.on(name, (i) => log.push(`${name} ${i.topics} ${i.wasRecovering ?? ''} ${i.recovered ?? ''}`.trim()));
  c.on('webchat:all', () => {});
  await until(() => allSubscribed(c), 3000, 'subscribed');
  assert.equal(c.state, 'connected');
  frames.last.close();
  await until(() => frames.sockets === 2 && allSubscribed(c), 3000, 'resubscribed');
  const [sub] = c.subscriptions();
  assert.equal(sub.wasRecovering, true);
  assert.equal(sub.recovered, true);
  assert.equal(sub.position.epoch, c.epoch);
  c.off('webchat:all');
  assert.deepEqual(log, [
    'subscribing webchat:all',
    'connecting',
    'connected',
    'subscribed webchat:all false',
    'disconnected true',
    'subscribing webchat:all false',
    'connecting',
    'connected',
    'subscribed webchat:all true true',
    'unsubscribed webchat:all true true',
  ]);
});

test('a token is refreshed ahead of its expiry on the same connection', async () => {
  const secret = 'recovery-test-secret-0123456789abcdef0123';
  const key = 'recovery-key';
  const secured = await startHub({ args: ['--api-keys', `${key}=publish+subscribe`, '--jwt-secrets', secret, '--jwt-leeway', '0s'] });
  try {
    let minted = 0;
    const getToken = async (customerId) => {
      minted++;
      const r = await fetch(`${secured.http}/v1/tokens`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': key },
        body: JSON.stringify({ customerId, ttlSeconds: 3 }),
      });
      return r.json();
    };
    const frames = [];
    const c = new ActionHub({ url: secured.ws, backoff: { min: 50, max: 400 }, getToken, WebSocket: recordingSocket(frames) });
    ctx.clients.push(c);
    const drops = [];
    c.on('disconnected', (d) => drops.push(d));
    const got = [];
    c.on('visitor:track', (e) => got.push(e.name));
    await c.ready();
    // Three 3-second tokens' lifetimes on one socket.
    await until(() => frames.filter((f) => f.op === 'refresh').length >= 3, 15_000, 'three refreshes');
    await c.track('after-refreshes');
    await until(() => got.includes('after-refreshes'), 3000, 'delivery after the refreshes');
    assert.equal(frames.sockets, 1, 'never reconnected');
    assert.deepEqual(drops, []);
    assert.ok(minted >= 4);
    c.close();
  } finally {
    await secured.dispose();
  }
});

test('history() reads GET /v1/events with the same filters, paged by next', async () => {
  const c = client();
  const x = ids();
  const [a, b] = await post(ctx.hub, [lifecycle('offered', x), lifecycle('accepted', x), { type: 'track', customerId: x.customerId, name: 'other' }]);
  const all = await c.history({ topics: ['webchat:all'], where: { customerId: [x.customerId] } });
  assert.deepEqual(all.events.map((e) => [e.seq, e.topic]), [[a.seq, 'webchat:offered'], [b.seq, 'webchat:accepted']]);
  assert.equal(all.epoch, (await c.ready(), c.epoch));
  const page1 = await c.history({ topics: 'webchat:all', where: { customerId: [x.customerId] }, limit: 1 });
  assert.equal(page1.events.length, 1);
  const page2 = await c.history({ topics: 'webchat:all', where: { customerId: [x.customerId] }, since: page1.next });
  assert.deepEqual(page2.events.map((e) => e.seq), [b.seq]);
  await assert.rejects(c.history({ topics: ['webchat:bogus'] }), (e) => e instanceof ActionHubError && e.code === 'bad_request');
});
