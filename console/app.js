// actionhub live console: the entry module. It wires the connection (conn.js), the model
// of customers and actions (model.js) and the views, and routes by the URL's hash:
// `#/` customers, `#/visitors/{id}` one visitor, `#/funnels`, `#/trends`, `#/segments`,
// `#/companies`, `#/ops`. The view a reconnect finds is the view it keeps.
import { $, esc, short, ago, throttle } from './util.js';
import { Hub } from './conn.js';
import { Model, STATES } from './model.js';
import { CustomerTable, feed, drawMaps, widths } from './customers.js';
import { VisitorView } from './visitor.js';
import { funnels, renderFunnels } from './funnels.js';
import { Trends } from './trends.js';
import { drawSection } from './directory.js';
import { drawOps } from './ops.js';

const REDRAW_MS = 150;
const STATS_MS = 5000;
const OPS_MS = 5000;

const hub = new Hub();
const model = new Model();
const trends = new Trends();
const table = new CustomerTable(model, $('customers-scroll'), $('counts'));
let route = { view: 'overview' };
let stats = [];
// The newest seq the main subscription has handed on: an event at or below it (the
// visitor subscription's replay of what the main one already brought) changes nothing.
let newest = 0;
// Set once the main subscription's snapshot is in: until then its events are not the
// model's (the snapshot replaces the model when it comes).
let mainReady = false;

const visitor = new VisitorView(hub, $('visitor'), () => redraw());

// ---- the data -----------------------------------------------------------------------------
hub.on('status', (state, text) => {
  $('status').dataset.state = state;
  $('status-text').textContent = text;
});
hub.subscribe('console', { topics: ['all'], snapshot: true }, {
  snapshot(frame, first) {
    model.applySnapshot(frame, first);
    if (frame.more !== true) {
      newest = frame.seq;
      mainReady = true;
      trends.startLive(frame.seq, hub);
    }
    redraw();
  },
});
hub.on('connected', () => refreshStats());
hub.on('event', (ev, seq) => {
  visitor.event(ev, seq);
  if (!mainReady || seq <= newest) return;
  newest = seq;
  model.apply(ev);
  trends.count(ev);
  feed($('feed'), ev);
  if (ev.actionId) statsSoon();
  if (ev.topic?.startsWith('segment:') && route.view === 'segments') sectionSoon();
  redraw();
});

let statsTimer = null;
function statsSoon() {
  if (!statsTimer) statsTimer = setTimeout(refreshStats, 400);
}
async function refreshStats() {
  clearTimeout(statsTimer);
  statsTimer = null;
  try {
    stats = (await hub.json('/v1/stats/action-maps')).actionMaps || [];
  } catch {
    return; // the next event or tick tries again
  }
  drawMaps($('maps'), stats);
  drawOptions();
  if (route.view === 'funnels') drawFunnels();
}
setInterval(refreshStats, STATS_MS);

let sectionTimer = null;
function sectionSoon() {
  clearTimeout(sectionTimer);
  sectionTimer = setTimeout(() => drawSection(hub, route.view, $(route.view)), 500);
}

// ---- the views ----------------------------------------------------------------------------
const filters = () => ({
  map: $('f-map').value,
  media: $('f-media').value,
  version: $('f-version').value,
  state: $('f-state').value,
  text: $('f-text').value.trim().toLowerCase(),
  live: $('f-live').checked,
});

const redraw = throttle(draw, REDRAW_MS);
function draw() {
  if (route.view === 'overview') {
    const f = filters();
    table.draw({ map: f.map, media: f.media, state: f.state, live: f.live, text: f.text });
    $('rate').textContent = `${trends.recentRate().toFixed(1)}/s over the last minute`;
  } else if (route.view === 'visitor') {
    visitor.draw();
  }
}

function drawFunnels() {
  const f = filters();
  const list = funnels(stats.filter((r) => !f.map || r.actionMapId === f.map), { media: f.media, version: f.version });
  $('funnels').innerHTML = renderFunnels(list);
  widths($('funnels'));
}

let optionsKey = '';
function drawOptions() {
  const maps = [...new Set(stats.map((m) => m.actionMapId))].sort();
  const versions = [...new Set(stats.map((m) => m.actionMapVersion))].sort((a, b) => a - b);
  const key = maps.join() + '|' + versions.join();
  if (key === optionsKey) return;
  optionsKey = key;
  fill($('f-map'), maps.map((id) => [id, short(id)]));
  fill($('f-version'), versions.map((v) => [String(v), `v${v}`]));
}
function fill(select, options) {
  const value = select.value;
  select.innerHTML = '<option value="">all</option>' + options.map(([v, label]) => `<option value="${esc(v)}">${esc(label)}</option>`).join('');
  select.value = value;
}

let charts = null;
let opsTimer = null;
function show(next) {
  const prev = route;
  route = next;
  for (const el of document.querySelectorAll('main > .view')) el.hidden = el.dataset.view !== next.view;
  for (const a of document.querySelectorAll('.tabs a')) a.classList.toggle('on', a.dataset.view === next.view || (next.view === 'visitor' && a.dataset.view === 'overview'));
  if (prev.view === 'visitor' && (next.view !== 'visitor' || next.id !== prev.id)) visitor.close();
  clearInterval(opsTimer);
  if (next.view === 'visitor') visitor.open(next.id);
  if (next.view === 'funnels') drawFunnels();
  if (next.view === 'trends' && !charts) {
    charts = [trends.mount($('chart-events'), 'events'), trends.mount($('chart-rate'), 'rate', 200)];
  }
  if (next.view === 'segments' || next.view === 'companies') drawSection(hub, next.view, $(next.view));
  if (next.view === 'ops') {
    const tick = () => drawOps(hub, $('ops'));
    tick();
    opsTimer = setInterval(tick, OPS_MS);
  }
  trends.draw();
  draw();
}

function parse(hash) {
  const path = hash.replace(/^#\/?/, '');
  const m = path.match(/^visitors\/(.+)$/);
  if (m) return { view: 'visitor', id: decodeURIComponent(m[1]) };
  return { view: ['funnels', 'trends', 'segments', 'companies', 'ops'].includes(path) ? path : 'overview' };
}
window.addEventListener('hashchange', () => show(parse(location.hash)));

// ---- search: local customers first, then the hub's visitor search (user id, name, email) --
let hits = [];
let searchTimer = null;
function searchHub() {
  const q = $('f-text').value.trim();
  clearTimeout(searchTimer);
  if (q.length < 2) return showHits([]);
  searchTimer = setTimeout(async () => {
    try {
      const body = await hub.json(`/v1/visitors?search=${encodeURIComponent(q)}&limit=8`);
      if ($('f-text').value.trim() === q) showHits(body.visitors || []);
    } catch {
      showHits([]);
    }
  }, 250);
}
function showHits(list) {
  hits = list;
  const ul = $('search-hits');
  ul.hidden = !list.length;
  ul.innerHTML = list.map((v) => `<li><a href="#/visitors/${esc(encodeURIComponent(v.visitorId))}">${esc(v.name || v.userId || short(v.visitorId))}</a> ` +
    `<span class="muted small">${esc(v.email || v.userId || '')} · seen ${esc(ago(v.lastSeenAt))} ago</span></li>`).join('');
}
$('f-text').addEventListener('input', () => {
  redraw();
  searchHub();
});
$('f-text').addEventListener('keydown', (e) => {
  if (e.key === 'Enter') {
    e.preventDefault();
    const id = hits[0]?.visitorId || table.rows[0]?.[0].customerId;
    if (id) location.hash = `#/visitors/${encodeURIComponent(id)}`;
    showHits([]);
  } else if (e.key === 'Escape') {
    $('f-text').value = '';
    showHits([]);
    $('f-text').blur();
    redraw();
  }
});
$('search-hits').addEventListener('click', () => showHits([]));
document.addEventListener('keydown', (e) => {
  const typing = e.target.closest?.('input, select, textarea');
  if (e.key === '/' && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
    e.preventDefault();
    $('f-text').focus();
    $('f-text').select();
  }
});

// ---- wiring -------------------------------------------------------------------------------
for (const s of STATES) $('f-state').insertAdjacentHTML('beforeend', `<option>${s}</option>`);
for (const id of ['f-map', 'f-media', 'f-version', 'f-state', 'f-live']) {
  $(id).addEventListener('change', () => (route.view === 'funnels' ? drawFunnels() : draw()));
}
$('customers').addEventListener('click', (e) => {
  const tr = e.target.closest('tr[data-customer-id]');
  if (tr) location.hash = `#/visitors/${encodeURIComponent(tr.dataset.customerId)}`;
});
$('key').value = hub.apiKey;
$('auth').addEventListener('submit', (e) => {
  e.preventDefault();
  newest = 0;
  mainReady = false;
  hub.setKey($('key').value.trim());
  show(route);
});
setInterval(() => {
  for (const td of document.querySelectorAll('td[data-ts]')) td.textContent = ago(td.dataset.ts);
}, 5000);
setInterval(() => {
  trends.draw();
  $('trend-note').textContent = trends.history;
}, 1000);

trends.mount($('mini-chart'), 'events', 140);
hub.connect();
show(parse(location.hash));
