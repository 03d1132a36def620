// Starts the real hub binary for a test: 127.0.0.1 only, a temp data dir, bounded in time,
// and always stopped. Shared by the Node tests and the browser tests.
import { before, after } from 'node:test';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
export const BINARY = process.env.ACTIONHUB_BIN || join(repo, 'target/release/actionhub');
// No test hub outlives this, whatever the test does.
const LIFETIME_MS = 120_000;

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts a hub; resolves once it listens. `port` 0 picks a free one (read back from its log).
 * @returns {Promise<{port:number, http:string, ws:string, dataDir:string, stop:() => Promise<void>, kill:() => Promise<void>}>}
 */
export async function startHub({ port = 0, dataDir, args = [] } = {}) {
  if (!existsSync(BINARY)) throw new Error(`no hub binary at ${BINARY}: run cargo build --release first`);
  const ownDir = !dataDir;
  dataDir = dataDir || mkdtempSync(join(tmpdir(), 'actionhub-js-'));
  const child = spawn(BINARY, ['--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
  });
  running.add(child);
  const guard = setTimeout(() => child.kill('SIGKILL'), LIFETIME_MS);
  guard.unref();
  const exited = new Promise((resolve) => child.once('exit', resolve));
  exited.then(() => running.delete(child));
  let log = '';
  const bound = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hub did not start within 10 s:\n${log}`)), 10_000);
    const onData = (chunk) => {
      log += chunk;
      // The address may carry ANSI styling around `addr=`; strip escapes first.
      const m = log.replace(/\x1b\[[0-9;]*m/g, '').match(/addr=127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`hub exited (${code}) before listening:\n${log}`));
    });
  });
  const stopWith = async (signal) => {
    clearTimeout(guard);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      const slow = setTimeout(() => child.kill('SIGKILL'), 12_000);
      await exited;
      clearTimeout(slow);
    }
  };
  return {
    port: bound,
    http: `http://127.0.0.1:${bound}`,
    ws: `ws://127.0.0.1:${bound}/v1/ws`,
    dataDir,
    log: () => log,
    /** Graceful: SIGTERM, the hub closes connections with 1001. Keeps the data dir. */
    stop: () => stopWith('SIGTERM'),
    /** Stops the hub and removes the data dir it made. */
    dispose: async () => {
      await stopWith('SIGTERM');
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** POSTs events to the hub over HTTP; returns the per-event results. */
export async function post(hub, events) {
  const r = await fetch(`${hub.http}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(events),
  });
  if (!r.ok) throw new Error(`POST /v1/events: ${r.status} ${await r.text()}`);
  return (await r.json()).results;
}

export async function getJson(hub, path) {
  const r = await fetch(hub.http + path);
  return { status: r.status, body: await r.json() };
}

/** Waits until `check()` is truthy, polling; fails after `ms`. */
export async function until(check, ms = 5000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const uuid = () => crypto.randomUUID();

/** A lifecycle event for HTTP publishing. */
export function lifecycle(state, ids, extra = {}) {
  return {
    actionId: ids.actionId,
    actionState: state,
    actionMediaType: ids.mediaType || 'webchat',
    actionMapId: ids.actionMapId,
    actionMapVersion: ids.actionMapVersion || 1,
    customerId: ids.customerId,
    sessionId: ids.sessionId,
    ...extra,
  };
}

/**
 * One hub for a test file: started before its tests and stopped after them, with every
 * SDK client `client()` made closed first. `ctx.hub` is the hub once it has started.
 */
export function hubForTests(ActionHub) {
  const ctx = { hub: undefined, clients: [] };
  before(async () => {
    ctx.hub = await startHub();
  });
  after(async () => {
    for (const c of ctx.clients) c.close();
    await ctx.hub?.dispose();
  });
  ctx.client = (options = {}) => {
    const c = new ActionHub({ url: ctx.hub.ws, backoff: { min: 50, max: 400 }, ...options });
    ctx.clients.push(c);
    return c;
  };
  return ctx;
}

/**
 * A WebSocket that records the frames the SDK sends in `log`; `cut(frame, sockets)` true
 * closes it on a received frame; while `log.offline` is set, connecting fails as on a
 * network that is down.
 */
export function recordingSocket(log, cut = () => false) {
  return class extends WebSocket {
    constructor(...args) {
      if (log.offline) throw new Error('offline');
      super(...args);
      log.sockets = (log.sockets || 0) + 1;
      log.last = this;
      this.addEventListener('message', (m) => cut(JSON.parse(m.data), log.sockets) && this.close());
    }
    send(data) {
      log.push(JSON.parse(data));
      super.send(data);
    }
  };
}

/** Fresh ids for one action of one customer's session. */
export const actionIds = () => ({ actionId: uuid(), actionMapId: uuid(), customerId: uuid(), sessionId: uuid() });
