// A typed usage example: `tsc -p test/types` checks it against the declarations the build
// generates from src/'s JSDoc (dist/types), as a package user's editor would see them.
import ActionHub, {
  ActionHubError, installAc, installGt, installTransactional,
  type HubEvent, type PublishResult, type Snapshot, type EventOf, type Topic, type WebchatEvent, type SubscriptionInfo,
} from '../../dist/types/index.mjs';

const hub = new ActionHub({
  url: 'https://hub.example.com',
  getToken: async (customerId: string) => {
    const r = await fetch('/api/actionhub-token', { method: 'POST', body: JSON.stringify({ customerId }) });
    return (await r.json()) as { token: string; expiresAt: string };
  },
  backoff: { min: 250, max: 10_000 },
});

hub.on('webchat:all', (e) => {
  const seq: number = e.seq;
  // A pattern narrows the union: only web chat events reach this handler.
  const topic: `webchat:${string}` = e.topic;
  const chat: WebchatEvent = e;
  console.log(seq, topic, chat.actionState, e.timestamp);
  // @ts-expect-error a web chat event has no visitor `type`
  console.log(e.type);
});
hub.once('contentoffer:accepted', { actionMapVersion: [2] }, (e) => console.log(e.actionId, e.actionState));
hub.on('all', (e: HubEvent) => {
  // The union is discriminated by topic.
  if (e.topic === 'visitor:track') console.log(e.name, e.properties);
  else if (e.topic === 'visitor:update') console.log(e.attributes, e.company?.id);
  else if (e.topic === 'session:ended') console.log(e.durationMs, e.reason);
  else if (e.topic === 'visitor:merged') console.log(e.mergedCustomerIds);
});
hub.on(['visitor:signin', 'visitor:signout'], (e) => console.log(e.type, e.userId));
const anyOffered: (e: EventOf<'all:offered'>) => void = (e) => console.log(e.actionMediaType);
hub.on('all:offered', anyOffered);
const t: Topic = 'webchat:engaged';
// @ts-expect-error no such state
const bad: Topic = 'webchat:bogus';
// @ts-expect-error a typo in a pattern is a type error, not a subscription to nothing
hub.on('webchat:offerd', () => {});
hub.on('subscribed', (s: SubscriptionInfo) => console.log(s.recovered, s.wasRecovering, s.position?.seq));
hub.on('disconnected', ({ code, reconnect }) => console.log(code, reconnect));
console.log(t, bad, hub.state, hub.subscriptions().length);
void hub.history({ topics: ['webchat:all'], since: 0 }).then((page) => page.events.map((e) => e.topic));
hub.on('error', (err: ActionHubError) => console.warn(err.code, err.message));
hub.on('disconnected', ({ code }) => console.log('closed', code));
hub.off('webchat:all');

const chat = hub.action('webchat', { actionMapId: '6f1c1a52-3b8e-4c1d-9a63-1f0f3a1e2b11', actionMapVersion: 2 });
async function flow(): Promise<void> {
  const r: PublishResult = await chat.offered();
  if (!r.duplicate) await chat.accepted({ conversationId: 'c-1' });
  await chat.started();
  await chat.engaged();
  await chat.errored(500, 'widget crashed');
  const offer = hub.action('contentoffer', { actionMapId: '0a7e6d1c-5f4b-4e8a-b1c2-9d3e4f5a6b7c' });
  await offer.offered();
  // @ts-expect-error content offers have no `started` state
  await offer.started();
  await hub.identify('user-1', { plan: 'gold' });
  await hub.signin('user-1');
  await hub.page();
  await hub.track('added-to-cart', { sku: 'A1' });
  await hub.userinfo('user-1');
  await hub.update({ plan: 'platinum' }, { id: 'acme', name: 'Acme', seats: 40 });
  // @ts-expect-error a company needs its id
  await hub.update({ plan: 'platinum' }, { name: 'Acme' });
  await hub.exit();
  await hub.signout();
  const snap: Snapshot = await hub.snapshot({ customerId: [hub.customerId] });
  console.log(snap.actions.map((a) => a.actionState), hub.sessionId, hub.seq);
  await hub.publish({ type: 'track', customerId: hub.customerId, name: 'x', eventId: 'once-only' });
}
flow().catch((e: unknown) => {
  if (e instanceof ActionHubError && e.code === 'queue_full') console.warn('offline too long');
});

const ac = installAc(hub);
ac('pageview');
ac('record', 'product_added', { sku: 'A1' });
installGt(hub).push(['sendSignIn', { userId: 'user-1' }]);
installTransactional(hub)('update', { plan: 'gold' });
ac('on', 'webchat:all', (e) => console.log(e.actionId));
ac('page', { url: location.href });
void ac('signin', 'user-1');
const stop: () => void = ActionHub.toDataLayer(hub, { patterns: ['webchat:all'], eventName: (e) => `ah_${e.topic}` });
stop();
hub.close();
console.log(ActionHub.version);
