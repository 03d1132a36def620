// The Genesys Widgets adapter against a real hub, driven by a stub bus that emits the
// widget's events: each maps to the offered action's next state, enriched from `started`
// on with the conversationId, and a page reloaded mid-chat goes on with the same action
// without reporting anything twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ActionHub, attachGenesysWidgets } from '../src/index.mjs';
import { getJson, until, uuid, hubForTests } from './hub.mjs';

const ctx = hubForTests(ActionHub);

/** A stand-in for CXBus: subscribe, command('WebChatService.getSessionData'), and emit. */
function stubBus(session) {
  const handlers = {};
  return {
    subscribe: (name, cb) => (handlers[name] = handlers[name] || []).push(cb),
    command: async (name) => (name === 'WebChatService.getSessionData' ? { ...session } : Promise.reject(new Error(name))),
    emit: (name, data) => (handlers[name] || []).forEach((cb) => cb({ event: name, data })),
  };
}

const transitions = async (actionId, n) =>
  until(async () => {
    const { body } = await getJson(ctx.hub, `/v1/actions/${actionId}`);
    return body.transitions && body.transitions.length >= n && body;
  }, 5000, `${n} transitions`);

test('widget events report the lifecycle; a reload mid-chat restores the same action without a duplicate', async () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
  const customerId = uuid();
  const session = {};
  const page1 = new ActionHub({ url: ctx.hub.ws, storage, customerId });
  ctx.clients.push(page1);
  const chat = page1.action('webchat', { actionMapId: uuid(), actionMapVersion: 2 });
  await chat.offered();
  const bus = stubBus(session);
  attachGenesysWidgets(page1, { bus, action: chat });
  bus.emit('WebChat.opened');
  session.conversationId = 'conv-42';
  bus.emit('WebChatService.started');
  bus.emit('WebChatService.started'); // said twice: reported once
  await transitions(chat.actionId, 3);
  page1.close(); // the page reloads mid-chat

  const page2 = new ActionHub({ url: ctx.hub.ws, storage, customerId });
  ctx.clients.push(page2);
  const errors = [];
  page2.on('error', (e) => errors.push(e));
  const bus2 = stubBus(session);
  attachGenesysWidgets(page2, { bus: bus2, action: () => null });
  bus2.emit('WebChatService.restored');
  bus2.emit('WebChat.opened'); // the window reopens on the new page: not a new acceptance
  bus2.emit('WebChatService.agentConnected');
  bus2.emit('WebChatService.ended');
  bus2.emit('WebChat.closed'); // after the end: nothing
  const view = await transitions(chat.actionId, 5);
  assert.deepEqual(view.transitions.map((t) => t.actionState), ['offered', 'accepted', 'started', 'engaged', 'ended']);
  assert.equal(view.data?.conversationId, 'conv-42');
  const events = (await getJson(ctx.hub, `/v1/customers/${customerId}/events`)).body.events.map((f) => f.event).filter((e) => e.actionId === chat.actionId);
  assert.deepEqual(events.map((e) => [e.actionState, e.data?.conversationId]), [
    ['offered', undefined], ['accepted', undefined], ['started', 'conv-42'], ['engaged', 'conv-42'], ['ended', 'conv-42'],
  ]);
  assert.equal(store.get('actionhub.chat'), undefined, 'an ended chat is forgotten');
  assert.deepEqual(errors, []);
});

test('a cancelled form is rejected; a failed widget is errored', async () => {
  const c = new ActionHub({ url: ctx.hub.ws });
  ctx.clients.push(c);
  for (const [event, state] of [['WebChat.cancelled', 'rejected'], ['WebChat.failed', 'errored']]) {
    const chat = c.action('webchat', { actionMapId: uuid() });
    await chat.offered();
    const bus = stubBus({});
    const detach = attachGenesysWidgets(c, { bus, action: chat });
    bus.emit('WebChat.opened');
    bus.emit(event, { message: 'widget failed to load' });
    const view = await transitions(chat.actionId, 3);
    assert.equal(view.actionState, state);
    if (state === 'errored') assert.equal(view.errorMessage, 'widget failed to load');
    detach();
  }
});
