// Operations: the node this console talks to (/readyz: seq, epoch, writable, and in
// cluster mode its name and stream lag), a few series of /metrics (connections,
// subscriptions, slow-consumer closes, retained events), and the webhook sinks
// (/v1/sinks, which needs an admin key; a hub that cannot serve them answers 503 and says
// why, which is shown as it is).
import { esc, clock } from './util.js';

/** Prometheus text as name{labels} -> value, for the samples the console reads. */
export function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+(\S+)/);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

const METRICS = [
  ['connections', 'actionhub_connections'],
  ['subscriptions', 'actionhub_subscriptions'],
  ['slow-consumer closes', 'actionhub_slow_consumers_closed_total'],
  ['latest seq', 'actionhub_latest_seq'],
  ['retained events', 'actionhub_retained_events'],
  ['held actions', 'actionhub_actions'],
  ['stream lag', 'actionhub_stream_lag'],
];

export async function drawOps(hub, el) {
  const [ready, metrics, sinks] = await Promise.all([
    hub.get('/readyz').catch((e) => ({ status: 0, body: { error: { message: e.message } } })),
    hub.get('/metrics').catch(() => ({ status: 0, body: '' })),
    hub.get('/v1/sinks').catch((e) => ({ status: 0, body: { error: { message: e.message } } })),
  ]);
  const r = ready.body || {};
  const node = `<dl class="kv" id="ops-node">` +
    `<dt>status</dt><dd data-field="status" class="${ready.status === 200 ? 'ok' : 'err'}">${esc(r.status || r.error?.message || `HTTP ${ready.status}`)}</dd>` +
    `<dt>node</dt><dd>${esc(r.node || hub.node || 'single node')}</dd>` +
    (r.lag !== undefined ? `<dt>stream lag</dt><dd data-field="lag">${esc(r.lag)}</dd>` : '') +
    `<dt>seq</dt><dd data-field="seq">${esc(r.seq ?? '—')}</dd><dt>epoch</dt><dd class="mono">${esc(r.epoch || '—')}</dd>` +
    `<dt>writable</dt><dd>${r.writable === false ? '<span class="err">no: disk full, publishes refused</span>' : esc(r.writable ?? '—')}</dd>` +
    `<dt>read at</dt><dd>${esc(clock(new Date().toISOString()))}</dd></dl>` +
    (r.node ? '<p class="muted small">In cluster mode each node reports its own lag; this is the node serving the console.</p>' : '');
  const samples = typeof metrics.body === 'string' ? parseMetrics(metrics.body) : new Map();
  const counters = `<dl class="kv" id="ops-metrics">${METRICS.filter(([, name]) => samples.has(name))
    .map(([label, name]) => `<dt>${esc(label)}</dt><dd data-metric="${esc(name)}">${esc(samples.get(name))}</dd>`).join('') || '<dd class="muted">metrics not readable</dd>'}</dl>`;
  let sinkHtml;
  if (sinks.status === 200) {
    const list = sinks.body.sinks || [];
    sinkHtml = `<table class="sinks" id="ops-sinks"><thead><tr><th>sink</th><th>state</th><th class="num">cursor</th><th class="num">lag</th><th class="num">failures</th><th>last</th></tr></thead><tbody>` +
      (list.map((s) => `<tr data-sink="${esc(s.name)}"><td>${esc(s.name)} <span class="muted small">${esc(s.url)}</span></td>` +
        `<td class="${s.state === 'paused' ? 'err' : 'ok'}">${esc(s.state)}</td><td class="num">${esc(s.cursor)}</td><td class="num">${esc(s.lag)}</td>` +
        `<td class="num">${esc(s.consecutiveFailures)}</td><td class="small">${esc(s.lastStatus ?? '')} ${esc(s.lastError || '')}</td></tr>`).join('') ||
        '<tr><td colspan="6" class="empty">no sinks</td></tr>') + '</tbody></table>';
  } else if (sinks.status === 503) {
    sinkHtml = `<p class="empty" id="ops-sinks" data-unavailable>sinks: ${esc(sinks.body?.error?.message || 'unavailable')}</p>`;
  } else if (sinks.status === 403 || sinks.status === 401) {
    sinkHtml = '<p class="empty" id="ops-sinks">sinks: reading them needs a key with the admin scope</p>';
  } else {
    sinkHtml = `<p class="empty err" id="ops-sinks">sinks: ${esc(sinks.body?.error?.message || `HTTP ${sinks.status}`)}</p>`;
  }
  el.innerHTML = `<section class="panel"><h3>Node</h3>${node}</section><section class="panel"><h3>Connections and history</h3>${counters}</section>` +
    `<section class="panel wide-panel"><h3>Webhook sinks</h3>${sinkHtml}</section>`;
}
