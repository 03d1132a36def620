// A typed usage example: `tsc -p test/types` checks it against actionhub.d.ts.
import ActionHub, { ActionHubError, installAc, installGt, installTransactional, type HubEvent, type PublishResult, type Snapshot } from '../../actionhub';

const hub = new ActionHub({
  url: 'https://hub.example.com',
  getToken: async (customerId: string) => {
    const r = await fetch('/api/actionhub-token', { method: 'POST', body: JSON.stringify({ customerId }) });
    return (await r.json()) as { token: string; expiresAt: string };
  },
  backoff: { min: 250, max: 10_000 },
});

hub.on('webchat:all', (e: HubEvent) => {
  const seq: number = e.seq;
  const topic: string = e.topic;
  console.log(seq, topic, e.actionState, e.timestamp);
});
hub.once('contentoffer:accepted', { actionMapVersion: [2] }, (e) => console.log(e.actionId));
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
window.ActionHub?.version;
