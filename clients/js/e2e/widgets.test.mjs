// The Genesys Widgets adapter in headless Chromium, against a stub of the widgets' bus
// that emits what the test tells it: the lifecycle is reported as the chat goes, and a
// page reloaded mid-chat restores the same action with no duplicate report.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startHub, getJson, until } from '../test/hub.mjs';
import { launchBrowser, startSite, newPage } from './site.mjs';

let hub;
let site;
let browser;

const pages = {
  '/chat.html': `<!doctype html><title>chat</title><script>
    // A stand-in for Genesys Widgets' bus, where the widgets put it.
    (function () {
      var handlers = {};
      window._genesys = { widgets: { bus: {
        subscribe: function (name, cb) { (handlers[name] = handlers[name] || []).push(cb); },
        command: function (name) {
          return Promise.resolve(name === 'WebChatService.getSessionData' ? { conversationId: sessionStorage.getItem('stub.conversation') } : null);
        },
        emit: function (name, data) { (handlers[name] || []).forEach(function (cb) { cb({ event: name, data: data }); }); }
      } } };
    })();
  </script><script type="module">
    import { ActionHub, attachGenesysWidgets } from 'HUB/sdk/actionhub.mjs';
    const hub = (window.actionhub = new ActionHub({ url: 'HUB' }));
    // The site's invitation, on the first visit only: no action map offers again mid-chat.
    let chat = null;
    if (location.search.includes('offer')) {
      chat = hub.action('webchat', { actionMapId: '6f1c1a52-3b8e-4c1d-9a63-1f0f3a1e2b11', actionMapVersion: 2 });
      chat.offered();
      window.chatId = chat.actionId;
    }
    attachGenesysWidgets(hub, { action: () => chat });
    window.attached = true;
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

const states = (actionId, n) =>
  until(async () => {
    const { body } = await getJson(hub, `/v1/actions/${actionId}`);
    return body.transitions && body.transitions.length >= n && body;
  }, 5000, `${n} transitions`);

test('the chat widget lifecycle is reported; a reload mid-chat restores it without a duplicate', { timeout: 30_000 }, async () => {
  const { context, page, problems } = await newPage(browser);
  await page.goto(site.url('/chat.html?offer'));
  await page.waitForFunction(() => window.attached && window.actionhub.connected);
  const actionId = await page.evaluate(() => window.chatId);
  await page.evaluate(() => {
    const bus = window._genesys.widgets.bus;
    bus.emit('WebChat.opened');
    sessionStorage.setItem('stub.conversation', 'conv-7');
    bus.emit('WebChatService.started');
  });
  await states(actionId, 3);
  await page.goto(site.url('/chat.html')); // a reload mid-chat, in the same tab
  await page.waitForFunction(() => window.attached && window.actionhub.connected);
  await page.evaluate(() => {
    const bus = window._genesys.widgets.bus;
    bus.emit('WebChatService.restored');
    bus.emit('WebChat.opened');
    bus.emit('WebChatService.started');
    bus.emit('WebChatService.agentConnected');
    bus.emit('WebChatService.ended');
    bus.emit('WebChat.closed');
  });
  const view = await states(actionId, 5);
  await new Promise((r) => setTimeout(r, 200)); // nothing more may follow
  const again = (await getJson(hub, `/v1/actions/${actionId}`)).body;
  assert.deepEqual(again.transitions.map((t) => t.actionState), ['offered', 'accepted', 'started', 'engaged', 'ended']);
  assert.equal(view.data?.conversationId, 'conv-7');
  assert.deepEqual(problems, []);
  await context.close();
});
