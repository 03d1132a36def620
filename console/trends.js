// Trends: events per second over the last 15 minutes by media type, and the accept rate
// over time, drawn with uPlot (console/vendor/uplot.min.js, copied there by the SDK's build
// from the npm package). The window starts from the hub's retained history
// (GET /v1/events) up to the main subscription's snapshot, then goes on with its live
// events (app.js hands each seq over once); every event counts at the hub's timestamp,
// so a replay after a reconnect lands where it happened.
import { clock } from './util.js';

export const WINDOW_S = 15 * 60;
export const BUCKET_S = 5;
const RATE_WINDOW = 12; // buckets: the accept rate is over the trailing minute
// Past this many events in 15 minutes the history is read only for its newest part, so
// opening the console on a busy hub costs a bounded number of requests.
const MAX_HISTORY = 20_000;
const PAGE = 1000;
const FAMILIES = ['webchat', 'contentoffer', 'visitor'];
const COLORS = { webchat: '#2f6fd6', contentoffer: '#b7791f', visitor: '#7b8794' };

export class Trends {
  constructor() {
    /** bucket number -> {webchat, contentoffer, visitor, offered: {..}, accepted: {..}} */
    this.buckets = new Map();
    this.started = false;
    this.knownFrom = Date.now() / 1000; // before this, nothing is known: drawn as a gap
    this.charts = [];
    this.history = 'not loaded';
  }

  bucket(ts) {
    const b = Math.floor(Date.parse(ts) / 1000 / BUCKET_S);
    let x = this.buckets.get(b);
    if (!x) {
      x = { webchat: 0, contentoffer: 0, visitor: 0, offered: { webchat: 0, contentoffer: 0 }, accepted: { webchat: 0, contentoffer: 0 } };
      this.buckets.set(b, x);
    }
    return x;
  }

  /** Counts one event, once: the caller sees to that. */
  count(ev) {
    if (!ev.timestamp) return;
    const x = this.bucket(ev.timestamp);
    const family = ev.actionMediaType || 'visitor';
    x[family === 'webchat' || family === 'contentoffer' ? family : 'visitor']++;
    if (ev.actionMediaType && (ev.actionState === 'offered' || ev.actionState === 'accepted')) x[ev.actionState][ev.actionMediaType]++;
  }

  /**
   * The main subscription's snapshot ended at `seq`: the events up to it are the
   * history's to count, those after it come live. Only the first time is the history read.
   */
  startLive(seq, hub) {
    if (this.started) return;
    this.started = true;
    this.loadHistory(hub, seq).catch((e) => (this.history = `history not read: ${e.message}`));
  }

  async loadHistory(hub, end) {
    const from = Date.now() - WINDOW_S * 1000;
    const firstAfter = async (seq) => (await hub.json(`/v1/events?since=${seq}&limit=1`)).events[0];
    // The first seq at or after the window's start: the seqs' timestamps only grow.
    let lo = 0;
    let hi = end;
    const oldest = await firstAfter(0);
    if (!oldest || oldest.seq > end) {
      this.history = 'no retained history';
      return;
    }
    if (Date.parse(oldest.event.timestamp) < from) {
      while (hi - lo > 1) {
        const mid = Math.floor((lo + hi) / 2);
        const e = await firstAfter(mid);
        if (!e || e.seq > end || Date.parse(e.event.timestamp) >= from) hi = mid;
        else lo = mid;
      }
    }
    let since = Math.max(lo, end - MAX_HISTORY);
    let read = 0;
    let startTs = null;
    for (;;) {
      const page = await hub.json(`/v1/events?since=${since}&limit=${PAGE}`);
      for (const f of page.events) {
        if (f.seq > end) break;
        if (Date.parse(f.event.timestamp) < from) continue;
        startTs ??= f.event.timestamp;
        this.count(f.event);
        read++;
      }
      if (page.events.length < PAGE || page.next >= end) break;
      since = page.next;
    }
    // What came before the first event read is known to be empty only when the read began
    // at the window's start (or at the oldest retained event).
    // A hub that no longer retains its oldest events leaves the time before them unknown too.
    const evicted = lo === 0 && oldest.seq > 1 && Date.parse(oldest.event.timestamp) >= from;
    const cut = (since !== lo || evicted) && startTs;
    this.knownFrom = cut ? Date.parse(startTs) / 1000 : from / 1000;
    this.history = `${read} events from the retained history${cut ? ` (since ${clock(startTs)})` : ''}`;
    this.draw();
  }

  /** uPlot's columns: [times, series...] over the window, up to the last whole bucket. */
  data(kind) {
    const now = Math.floor(Date.now() / 1000 / BUCKET_S);
    for (const b of this.buckets.keys()) if (b < now - WINDOW_S / BUCKET_S - RATE_WINDOW) this.buckets.delete(b);
    const xs = [];
    const cols = kind === 'rate' ? [[], []] : FAMILIES.map(() => []);
    const nowS = Date.now() / 1000;
    // The current bucket is drawn too, as a rate over the seconds it has run, so an event
    // shows at once rather than when its bucket is complete.
    for (let b = now - WINDOW_S / BUCKET_S; b <= now; b++) {
      const t = b * BUCKET_S;
      const span = b === now ? Math.max(1, nowS - t) : BUCKET_S;
      xs.push(t);
      const known = t >= this.knownFrom - BUCKET_S;
      if (kind === 'rate') {
        ['webchat', 'contentoffer'].forEach((m, i) => {
          let offered = 0;
          let accepted = 0;
          for (let k = b - RATE_WINDOW + 1; k <= b; k++) {
            offered += this.buckets.get(k)?.offered[m] || 0;
            accepted += this.buckets.get(k)?.accepted[m] || 0;
          }
          cols[i].push(known && offered ? Math.min(1, accepted / offered) * 100 : null);
        });
      } else {
        FAMILIES.forEach((f, i) => cols[i].push(known ? (this.buckets.get(b)?.[f] || 0) / span : null));
      }
    }
    return [xs, ...cols];
  }

  /** The events counted in the window. */
  total() {
    const from = Math.floor(Date.now() / 1000 / BUCKET_S) - WINDOW_S / BUCKET_S;
    let n = 0;
    for (const [b, x] of this.buckets) if (b >= from) n += x.webchat + x.contentoffer + x.visitor;
    return n;
  }

  /** Events per second over the last minute, for the header of the live feed. */
  recentRate() {
    const now = Math.floor(Date.now() / 1000 / BUCKET_S);
    let n = 0;
    for (let b = now - RATE_WINDOW; b < now; b++) {
      const x = this.buckets.get(b);
      if (x) n += x.webchat + x.contentoffer + x.visitor;
    }
    return n / (RATE_WINDOW * BUCKET_S);
  }

  /** Draws `kind` ('events' or 'rate') into `el` with uPlot; it follows `el`'s width. */
  mount(el, kind, height = 220) {
    const series = kind === 'rate'
      ? [{}, ...['webchat', 'contentoffer'].map((m) => ({ label: `${m} accept rate`, stroke: COLORS[m], width: 2, value: (u, v) => (v === null ? '—' : `${Math.round(v)}%`) }))]
      : [{}, ...FAMILIES.map((f) => ({ label: f === 'visitor' ? 'visitor & session' : f, stroke: COLORS[f], width: 2, value: (u, v) => (v === null ? '—' : v.toFixed(1)) }))];
    const opts = {
      width: Math.max(200, el.clientWidth),
      height,
      scales: { x: { time: true }, y: kind === 'rate' ? { range: [0, 100] } : { range: (u, min, max) => [0, Math.max(1, max)] } },
      series,
      axes: [{}, { label: kind === 'rate' ? 'accepted ÷ offered, trailing minute (%)' : 'events / s', size: 60 }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    const chart = new window.uPlot(opts, this.data(kind), el);
    const entry = { chart, el, kind };
    new ResizeObserver(() => el.clientWidth && chart.setSize({ width: el.clientWidth, height })).observe(el);
    this.charts.push(entry);
    return chart;
  }

  /** Redraws the charts that are on screen. */
  draw() {
    for (const { chart, el, kind } of this.charts) {
      if (!el.offsetParent) continue;
      const data = this.data(kind);
      chart.setData(data);
      // What the chart shows, in numbers, for readers that cannot see a canvas (and tests).
      if (kind === 'events') el.dataset.events = this.total();
    }
  }
}
