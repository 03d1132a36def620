// The overview: the customer table, the live feed and the per-map counts. The table is
// virtualized: it draws only the rows in view (plus a few), at a fixed row height, so ten
// thousand customers cost the same to scroll and redraw as fifty.
import { esc, short, ago, clock } from './util.js';
import { isTerminal, customerMatches } from './model.js';

const ROW_H = 36; // px; style.css gives every row exactly this height
const OVERSCAN = 8;
const MAX_FEED = 60;
const CHIPS = 4;

export class CustomerTable {
  constructor(model, scroller, counts) {
    this.model = model;
    this.scroller = scroller;
    this.body = scroller.querySelector('tbody');
    this.counts = counts;
    this.rows = [];
    this.key = '';
    scroller.addEventListener('scroll', () => this.drawRows(), { passive: true });
  }

  /** Filters the model (only when it or the filter changed) and draws the rows in view. */
  draw(filter) {
    const key = `${this.model.version} ${JSON.stringify(filter)}`;
    if (key !== this.key) {
      this.key = key;
      const narrowing = filter.map || filter.media || filter.state || filter.live;
      const actionShown = (a) => (!filter.map || a.actionMapId === filter.map) && (!filter.media || a.actionMediaType === filter.media) &&
        (!filter.state || a.actionState === filter.state) && (!filter.live || !isTerminal(a));
      this.rows = [];
      for (const c of this.model.byRecency()) {
        if (!customerMatches(c, filter.text)) continue;
        const shown = narrowing ? [...c.actions.values()].filter(actionShown) : [...c.actions.values()];
        if (narrowing && !shown.length) continue;
        this.rows.push([c, shown]);
      }
      this.counts.textContent = `${this.model.customers.size} customers · ${this.model.liveActions()} live actions` +
        (this.rows.length !== this.model.customers.size ? ` · ${this.rows.length} shown` : '');
    }
    this.drawRows(true);
  }

  drawRows(force = false) {
    const first = Math.max(0, Math.floor(this.scroller.scrollTop / ROW_H) - OVERSCAN);
    const count = Math.ceil(this.scroller.clientHeight / ROW_H) + 2 * OVERSCAN;
    const last = Math.min(this.rows.length, first + count);
    const span = `${first} ${last}`;
    if (!force && span === this.span) return;
    this.span = span;
    const html = this.rows.slice(first, last).map(([c, shown]) => {
      shown.sort((x, y) => y.seq - x.seq);
      const chips = shown.slice(0, CHIPS).map(chip).join('') + (shown.length > CHIPS ? `<span class="muted"> +${shown.length - CHIPS}</span>` : '');
      return `<tr class="row" data-customer-id="${esc(c.customerId)}">` +
        `<td class="mono" title="${esc(c.customerId)}">${esc(short(c.customerId))}</td>` +
        `<td><span class="id-${esc(c.state)}">${esc(c.state)}</span>${c.userId ? ` <span class="user">${esc(c.userId)}</span>` : ''}</td>` +
        `<td class="mono muted">${esc(short(c.sessionId))}</td>` +
        `<td class="chips">${chips || '<span class="muted">—</span>'}</td>` +
        `<td class="num muted" data-ts="${esc(c.lastSeen)}">${ago(c.lastSeen)}</td></tr>`;
    }).join('');
    const pad = (px) => `<tr class="pad" aria-hidden="true" data-pad="${px}"></tr>`;
    this.body.innerHTML = this.rows.length
      ? pad(first * ROW_H) + html + pad((this.rows.length - last) * ROW_H)
      : '<tr><td colspan="5" class="empty">no customers match</td></tr>';
    // Heights through the CSSOM: the console's content policy forbids inline style attributes.
    for (const tr of this.body.querySelectorAll('tr.pad')) tr.style.height = tr.dataset.pad + 'px';
  }
}

export function chip(a) {
  return `<span class="chip s-${esc(a.actionState)}" data-action-id="${esc(a.actionId)}" title="${esc(a.actionMediaType)} · map ${esc(short(a.actionMapId))} v${esc(a.actionMapVersion)} · ${esc(a.history.join(' → '))}">` +
    `<b>${a.actionMediaType === 'webchat' ? 'chat' : 'offer'}</b> <span class="state">${esc(a.actionState)}</span></span>`;
}

/** Adds one event to the top of the live feed. */
export function feed(list, ev) {
  const li = document.createElement('li');
  const what = ev.actionId ? `${short(ev.customerId)} · ${short(ev.actionId)}` : `${short(ev.customerId)}${ev.userId ? ' · ' + ev.userId : ''}`;
  li.innerHTML = `<span class="t">${esc(clock(ev.timestamp))}</span> <span class="topic">${esc(ev.topic)}</span> <span class="muted mono">${esc(what)}</span>`;
  if (ev.customerId) li.dataset.customerId = ev.customerId;
  list.prepend(li);
  while (list.children.length > MAX_FEED) list.lastChild.remove();
}

/** The per-map table of the overview: counts and accept rate per map, version and type. */
export function drawMaps(table, stats) {
  const body = stats.map((m) => {
    const rate = m.acceptRate;
    const p = rate === null || rate === undefined ? null : Math.round(rate * 100);
    return `<tr><td class="mono" title="${esc(m.actionMapId)}">${esc(short(m.actionMapId))} <span class="muted">v${esc(m.actionMapVersion)}</span></td>` +
      `<td>${esc(m.actionMediaType)}</td><td class="num">${m.counts?.offered ?? 0}</td><td class="num">${m.counts?.accepted ?? 0}</td>` +
      `<td>${p === null ? '<span class="muted">—</span>' : `<span class="bar"><i data-pct="${p}"></i></span> ${p}%`}</td></tr>`;
  }).join('');
  table.tBodies[0].innerHTML = body || '<tr><td colspan="5" class="empty">no actions yet</td></tr>';
  widths(table);
}

/** Sets the width of every bar under `root` from its data-pct, through the CSSOM. */
export function widths(root) {
  for (const i of root.querySelectorAll('i[data-pct]')) i.style.width = i.dataset.pct + '%';
}
