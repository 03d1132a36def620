// The visitor detail view (`#/visitors/{id}`, any customerId of the visitor or
// `user:<userId>`): the profile, its sessions with their pages, and a timeline of its
// events. The timeline starts from the retained history (GET /v1/visitors/{id}/events),
// then a subscription of its own, filtered to the visitor and started with `since` at the
// end of that read, brings everything after it, live and across reconnects.
import { esc, short, ago, clock, duration } from './util.js';

const TIMELINE_MAX = 500; // newest events kept on screen
const HISTORY_PAGES = 10; // of 1000 events: a very busy visitor shows its newest ones
const SUB = 'visitor';

export class VisitorView {
  constructor(hub, el, onChange) {
    this.hub = hub;
    this.el = el;
    this.onChange = onChange;
    this.id = null;
    this.view = null;
    this.sessions = [];
    this.timeline = new Map(); // seq -> event
    this.whereKey = '';
    this.refreshTimer = null;
    this.dirty = false; // redrawn only when it changed, so the timeline keeps its scroll
  }

  async open(id) {
    if (id === this.id) return;
    this.close();
    this.id = id;
    this.view = null;
    this.sessions = [];
    this.timeline = new Map();
    this.el.innerHTML = `<p class="muted">loading visitor ${esc(id)}…</p>`;
    const path = `/v1/visitors/${encodeURIComponent(id)}`;
    try {
      const [view, sessions] = await Promise.all([this.hub.json(path), this.hub.json(`${path}/sessions`)]);
      if (this.id !== id) return;
      this.view = view;
      this.sessions = sessions.sessions || [];
      // The history up to `next`; the subscription then starts after it.
      let since = 0;
      let epoch = this.hub.epoch;
      for (let i = 0; i < HISTORY_PAGES; i++) {
        const page = await this.hub.json(`${path}/events?since=${since}&limit=1000`);
        for (const f of page.events) this.add(f.event, f.seq);
        epoch = page.epoch;
        if (page.events.length < 1000) {
          since = page.next;
          break;
        }
        since = page.next;
      }
      if (this.id !== id) return;
      this.follow({ seq: since, epoch });
      this.dirty = true;
      this.draw();
    } catch (e) {
      if (this.id !== id) return;
      this.el.innerHTML = e.status === 404
        ? `<p class="empty">no visitor <span class="mono">${esc(id)}</span> on this hub</p>`
        : `<p class="empty err">could not read the visitor: ${esc(e.message)}</p>`;
    }
  }

  close() {
    this.id = null;
    this.whereKey = '';
    clearTimeout(this.refreshTimer);
    this.hub.unsubscribe(SUB);
  }

  /** The filter that selects this visitor's events: its user id when it has one (that
   * follows every customer the profile links, now and later), else its customers. */
  where() {
    const userId = this.view.identity?.userId || this.view.userId;
    return userId ? { userId: [userId] } : { customerId: this.view.customers };
  }

  follow(cursor) {
    const where = this.where();
    const key = JSON.stringify(where);
    if (key === this.whereKey) return;
    const position = this.hub.subs.get(SUB)?.cursor || cursor;
    this.hub.unsubscribe(SUB);
    this.whereKey = key;
    this.hub.subscribe(SUB, { topics: ['all'], where }, { match: (ev) => this.matches(ev) }, position);
  }

  matches(ev) {
    if (!this.view) return false;
    if (this.view.customers.includes(ev.customerId)) return true;
    const userId = this.view.identity?.userId;
    return Boolean(userId && ev.userId === userId) ||
      Boolean(ev.mergedCustomerIds?.some((c) => this.view.customers.includes(c)));
  }

  add(ev, seq) {
    this.timeline.set(seq, ev);
    if (this.timeline.size > TIMELINE_MAX) {
      const oldest = Math.min(...this.timeline.keys());
      this.timeline.delete(oldest);
    }
  }

  /** Every event the connection receives; those of this visitor go on its timeline. */
  event(ev, seq) {
    if (!this.view || !this.matches(ev) || this.timeline.has(seq)) return;
    this.add(ev, seq);
    this.dirty = true;
    this.onChange();
    // The profile and sessions the event changed are read again, at most once a second.
    if (!this.refreshTimer) this.refreshTimer = setTimeout(() => this.refresh(), 1000);
  }

  async refresh() {
    this.refreshTimer = null;
    const id = this.id;
    if (!id) return;
    const path = `/v1/visitors/${encodeURIComponent(id)}`;
    try {
      const [view, sessions] = await Promise.all([this.hub.json(path), this.hub.json(`${path}/sessions`)]);
      if (this.id !== id) return;
      this.view = view;
      this.sessions = sessions.sessions || [];
      this.follow(null);
      this.dirty = true;
      this.onChange();
    } catch {
      // A refresh that fails (the hub restarting) is retried by the next event.
    }
  }

  draw() {
    const v = this.view;
    if (!v || !this.dirty) return;
    this.dirty = false;
    const company = v.company ? (typeof v.company === 'object' ? v.company.name || v.company.id : v.company) : null;
    const segments = Array.isArray(v.segments) ? v.segments.map((s) => (typeof s === 'object' ? s.name || s.id : s)) : null;
    const fields = [
      ['visitor', `<span class="mono" data-field="visitorId">${esc(v.visitorId)}</span>`],
      ['identity', `<span class="id-${esc(v.identity?.state)}">${esc(v.identity?.state)}</span>`],
      ['user id', `<span data-field="userId">${esc(v.userId || '—')}</span>`],
      ['name', `<span data-field="name">${esc(v.name || '—')}</span>`],
      ['email', esc(v.email || '—')],
      v.phone ? ['phone', esc(v.phone)] : null,
      company !== null ? ['company', `<span data-field="company">${esc(company)}</span>`] : null,
      segments ? ['segments', segments.length ? segments.map((s) => `<span class="tag">${esc(s)}</span>`).join(' ') : '—'] : null,
      v.userIds?.length > 1 ? ['user ids', esc(v.userIds.join(', '))] : null,
      ['channels', Object.entries(v.channels || {}).map(([k, id]) => `<span class="tag">${esc(k)}: ${esc(id)}</span>`).join(' ') || '—'],
      ['customers', v.customers.map((c) => `<span class="mono">${esc(short(c))}</span>`).join(' ')],
      v.browser ? ['browser', esc(`${v.browser.name} ${v.browser.version || ''}`)] : null,
      v.os ? ['os', esc(`${v.os.name} ${v.os.version || ''}`)] : null,
      v.location?.country || v.location?.timezone ? ['location', esc([v.location.city, v.location.country, v.location.timezone].filter(Boolean).join(' · '))] : null,
      ['seen', `${esc(clock(v.firstSeenAt))} – ${esc(clock(v.lastSeenAt))} <span class="muted">(${esc(ago(v.lastSeenAt))} ago)</span>`],
      ['counts', `${v.sessionCount} sessions · ${v.counts?.pagesViewed ?? 0} pages · ${v.conversationCount} conversations · ${v.counts?.liveActions ?? 0} live actions`],
    ].filter(Boolean);
    const attrs = Object.entries(v.attributes || {});
    const sessions = this.sessions.map((s) =>
      `<li class="session" data-session-id="${esc(s.sessionId)}"><div><span class="mono">${esc(short(s.sessionId))}</span> ` +
      `${s.active ? '<span class="ok">active</span>' : `<span class="muted">ended${s.endReason ? ` (${esc(s.endReason)})` : ''}</span>`} ` +
      `<span class="muted small">${esc(clock(s.startedAt))} · ${esc(duration(s.duration))} · ${esc(s.pagesViewed)} pages${s.referrer ? ` · from ${esc(s.referrer)}` : ''}</span></div>` +
      `<ol class="pages">${(s.pages || []).map((p) =>
        `<li><span class="t">${esc(clock(p.viewedAt))}</span> <span class="title">${esc(p.title || p.url)}</span> ` +
        `<span class="muted small url">${esc(p.url)}</span> <span class="num small" data-time-on-page>${esc(duration(p.timeOnPage))}</span></li>`).join('')}</ol></li>`).join('');
    const events = [...this.timeline.entries()].sort((a, b) => b[0] - a[0]);
    this.el.innerHTML =
      `<div class="visitor-head"><a href="#/" class="back">← customers</a><h2>Visitor ${esc(v.name || v.userId || short(v.visitorId))}</h2></div>` +
      `<div class="visitor-grid"><section class="panel"><h3>Profile</h3><dl class="kv">${fields.map(([k, val]) => `<dt>${esc(k)}</dt><dd>${val}</dd>`).join('')}</dl>` +
      `<h3>Attributes</h3>${attrs.length ? `<dl class="kv attrs">${attrs.map(([k, val]) => `<dt>${esc(k)}</dt><dd>${esc(typeof val === 'object' ? JSON.stringify(val) : val)}</dd>`).join('')}</dl>` : '<p class="muted">none</p>'}` +
      `<h3>Sessions</h3><ul class="sessions">${sessions || '<li class="muted">none</li>'}</ul></section>` +
      `<section class="panel timeline-panel"><h3>Timeline <span class="muted">${events.length} events, live</span></h3>` +
      `<ol class="timeline" id="timeline">${events.map(([seq, ev]) => timelineItem(seq, ev)).join('') || '<li class="muted">no retained events</li>'}</ol></section></div>`;
  }
}

function timelineItem(seq, ev) {
  const [family, name] = (ev.topic || '').split(':');
  let what;
  if (ev.actionId) {
    what = `<span class="chip s-${esc(ev.actionState)}"><b>${ev.actionMediaType === 'webchat' ? 'chat' : 'offer'}</b> ${esc(ev.actionState)}</span> ` +
      `<span class="muted small">action ${esc(short(ev.actionId))} · map ${esc(short(ev.actionMapId))} v${esc(ev.actionMapVersion)}` +
      `${ev.errorMessage ? ` · <span class="err">${esc(ev.errorCode)} ${esc(ev.errorMessage)}</span>` : ''}</span>`;
  } else if (name === 'page') {
    what = `page <b>${esc(ev.page?.title || ev.page?.url)}</b> <span class="muted small">${esc(ev.page?.url)}</span>`;
  } else if (name === 'track') {
    what = `track <b>${esc(ev.name)}</b>`;
  } else if (['identify', 'signin', 'userinfo'].includes(name)) {
    const keys = Object.keys(ev.traits || {});
    what = `${esc(name)} <b>${esc(ev.userId)}</b>${keys.length ? ` <span class="muted small">traits: ${esc(keys.join(', '))}</span>` : ''}`;
  } else if (name === 'merged') {
    what = `merged <span class="muted small">${esc((ev.mergedCustomerIds || []).length)} customers</span>`;
  } else if (family === 'session') {
    what = `session ${esc(name)} <span class="mono small">${esc(short(ev.sessionId))}</span>` +
      (name === 'ended' ? ` <span class="muted small">${esc(ev.reason)} · ${esc(duration((ev.durationMs || 0) / 1000))} · ${esc(ev.pagesViewed)} pages</span>` : '');
  } else {
    what = `${esc(ev.topic)}${ev.segmentId ? ` <span class="mono small">${esc(short(ev.segmentId))}</span>` : ''}`;
  }
  return `<li data-seq="${seq}" data-topic="${esc(ev.topic)}"><span class="t">${esc(clock(ev.timestamp))}</span> ${what}</li>`;
}
