// actionhub live console: one WebSocket subscription to everything (with a snapshot to
// start from), a model of customers, sessions and actions built from it, and a view redrawn
// at most a few times a second so a thousand busy customers stay smooth. No dependencies.
'use strict';
(() => {
  const KEY_STORE = 'actionhub.console.key';
  const MAX_ROWS = 300; // rows drawn at once; the rest are counted, and filters narrow them
  const MAX_FEED = 60;
  const REDRAW_MS = 150;
  const STATES = {
    webchat: ['qualified', 'offered', 'accepted', 'started', 'engaged', 'ended', 'rejected', 'ignored', 'timedout', 'errored'],
    contentoffer: ['qualified', 'offered', 'accepted', 'rejected', 'ignored', 'errored'],
  };
  const TERMINAL = {
    webchat: ['ended', 'rejected', 'ignored', 'timedout', 'errored'],
    contentoffer: ['accepted', 'rejected', 'ignored', 'errored'],
  };

  const $ = (id) => document.getElementById(id);
  const esc = (v) =>
    String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  const short = (id) => (id ? String(id).slice(0, 8) : '—');

  // ---- the model ------------------------------------------------------------------------
  const customers = new Map(); // customerId -> customer
  const actions = new Map(); // actionId -> action
  let cursor = null; // {seq, epoch}: where to resume
  let selected = null;
  let mapStats = [];
  let eventTimes = [];

  function customer(id) {
    let c = customers.get(id);
    if (!c) {
      c = { customerId: id, state: 'anonymous', userId: null, sessionId: null, sessions: new Map(), actions: new Map(), lastSeen: '' };
      customers.set(id, c);
    }
    return c;
  }

  function touch(c, ts) {
    if (ts && ts > c.lastSeen) c.lastSeen = ts;
  }

  function isTerminal(a) {
    return (TERMINAL[a.actionMediaType] || []).includes(a.actionState);
  }

  function applyAction(a) {
    const prev = actions.get(a.actionId);
    const action = prev || { history: [] };
    if (prev && prev.seq >= a.seq) return;
    Object.assign(action, a);
    action.history.push(a.actionState);
    actions.set(a.actionId, action);
    const c = customer(a.customerId);
    c.actions.set(a.actionId, action);
    if (a.sessionId && !c.sessionId) c.sessionId = a.sessionId;
    touch(c, a.timestamp);
  }

  function apply(ev) {
    if (ev.actionId) return applyAction(ev);
    const c = ev.customerId ? customer(ev.customerId) : null;
    if (!c) return;
    touch(c, ev.timestamp);
    const [family, name] = ev.topic.split(':');
    if (family === 'session') {
      const s = c.sessions.get(ev.sessionId) || { sessionId: ev.sessionId, pages: 0 };
      c.sessions.set(ev.sessionId, s);
      if (name === 'started') {
        s.startedAt = ev.startedAt;
        c.sessionId = ev.sessionId;
      } else {
        s.endedAt = ev.endedAt;
        s.reason = ev.reason;
        s.pages = ev.pagesViewed ?? s.pages;
        if (c.sessionId === ev.sessionId) c.sessionId = null;
      }
      return;
    }
    if (family !== 'visitor') return;
    if (name === 'signin') Object.assign(c, { state: 'authenticated', userId: ev.userId });
    else if (name === 'signout') c.state = 'anonymous';
    else if (name === 'userinfo') Object.assign(c, { state: 'recognized', userId: ev.userId });
    else if (name === 'identify') {
      c.userId = ev.userId;
      if (c.state === 'anonymous') c.state = 'recognized';
    } else if (name === 'page' && ev.sessionId) {
      const s = c.sessions.get(ev.sessionId) || { sessionId: ev.sessionId, pages: 0 };
      s.pages++;
      c.sessions.set(ev.sessionId, s);
      if (!c.sessionId) c.sessionId = ev.sessionId;
    }
  }

  // A big snapshot comes as several frames sharing one seq; all but the last say
  // `more: true`. The view is replaced at the first frame and filled by the rest.
  let snapshotOpen = false;
  function applySnapshot(snap) {
    if (!snapshotOpen) {
      actions.clear();
      customers.clear();
    }
    snapshotOpen = snap.more === true;
    for (const c of snap.customers || []) {
      const m = customer(c.customerId);
      m.state = c.identity?.state || 'anonymous';
      m.userId = c.identity?.userId || null;
    }
    for (const a of snap.actions || []) applyAction(a);
  }

  // ---- the connection -------------------------------------------------------------------
  let ws = null;
  let attempt = 0;
  let timer = null;
  let nextId = 1;
  let epoch = null;
  let apiKey = sessionStorage.getItem(KEY_STORE) || '';

  function setStatus(state, text) {
    $('status').dataset.state = state;
    $('status-text').textContent = text;
  }

  function connect() {
    clearTimeout(timer);
    if (ws) {
      ws.onclose = null;
      ws.close();
    }
    const url = new URL('/v1/ws', location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    setStatus('connecting', 'connecting…');
    const sock = (ws = new WebSocket(url, 'actionhub.v1'));
    const send = (f) => sock.send(JSON.stringify({ id: nextId++, ...f }));
    sock.onopen = () => send(apiKey ? { op: 'connect', apiKey, client: { name: 'console' } } : { op: 'connect', client: { name: 'console' } });
    snapshotOpen = false;
    sock.onmessage = (m) => {
      const f = JSON.parse(m.data);
      if (f.type === 'connected') {
        attempt = 0;
        setStatus('live', f.scope?.kind === 'open' ? 'live · open mode' : 'live');
        epoch = f.epoch;
        // Resume after the last seq seen; the hub sends a snapshot instead when it cannot.
        const sub = { op: 'subscribe', sub: 'console', topics: ['all'], snapshot: true };
        if (cursor) Object.assign(sub, { since: cursor.seq, epoch: cursor.epoch });
        send(sub);
        refreshStats();
      } else if (f.type === 'snapshot') {
        applySnapshot(f);
        if (!snapshotOpen) cursor = { seq: f.seq, epoch };
        dirty();
      } else if (f.type === 'subscribed') {
        if (f.recovered !== true) cursor = { seq: f.seq, epoch };
      } else if (f.type === 'event') {
        cursor = { seq: Math.max(cursor.seq, f.seq), epoch };
        apply(f.event);
        feed(f.event);
        eventTimes.push(Date.now());
        if (f.event.actionId) statsSoon();
        dirty();
      } else if (f.type === 'error') {
        setStatus('error', `${f.code}: ${f.message}`);
      }
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      ws = null;
      if (e.code === 4001 || e.code === 4003) {
        setStatus('error', e.code === 4001 ? 'key refused: enter a valid API key' : 'forbidden: this key lacks the subscribe scope');
        return;
      }
      const delay = Math.min(15000, 500 * 2 ** attempt++) * (0.5 + Math.random() / 2);
      setStatus('reconnecting', `reconnecting in ${Math.ceil(delay / 1000)} s…`);
      timer = setTimeout(connect, delay);
    };
  }

  function api(path) {
    return fetch(path, { headers: apiKey ? { 'X-API-Key': apiKey } : {} }).then((r) =>
      r.ok ? r.json() : r.json().then((b) => Promise.reject(new Error(b.error?.message || r.statusText))),
    );
  }

  let statsTimer = null;
  function statsSoon() {
    if (!statsTimer) statsTimer = setTimeout(refreshStats, 400);
  }
  function refreshStats() {
    clearTimeout(statsTimer);
    statsTimer = null;
    api('/v1/stats/action-maps').then((s) => {
      mapStats = s.actionMaps || [];
      drawMaps();
    }, () => {});
  }
  setInterval(refreshStats, 5000);

  // ---- the view -------------------------------------------------------------------------
  let pending = false;
  function dirty() {
    if (pending) return;
    pending = true;
    setTimeout(() => requestAnimationFrame(() => {
      pending = false;
      draw();
    }), REDRAW_MS);
  }

  const filters = () => ({
    map: $('f-map').value,
    media: $('f-media').value,
    state: $('f-state').value,
    text: $('f-text').value.trim().toLowerCase(),
    live: $('f-live').checked,
  });

  function actionShown(a, f) {
    return (!f.map || a.actionMapId === f.map) && (!f.media || a.actionMediaType === f.media) &&
      (!f.state || a.actionState === f.state) && (!f.live || !isTerminal(a));
  }

  function chip(a) {
    return `<span class="chip s-${esc(a.actionState)}" data-action-id="${esc(a.actionId)}" title="${esc(a.actionMediaType)} · map ${esc(short(a.actionMapId))} v${esc(a.actionMapVersion)} · ${esc(a.history.join(' → '))}">` +
      `<b>${a.actionMediaType === 'webchat' ? 'chat' : 'offer'}</b> <span class="state">${esc(a.actionState)}</span></span>`;
  }

  function ago(ts) {
    if (!ts) return '—';
    const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
    return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m` : `${Math.floor(s / 3600)}h`;
  }

  function draw() {
    const f = filters();
    const actionFilter = f.map || f.media || f.state || f.live;
    const rows = [];
    for (const c of customers.values()) {
      if (f.text && !(c.customerId.includes(f.text) || (c.userId || '').toLowerCase().includes(f.text) ||
        [...c.actions.keys()].some((id) => id.includes(f.text)))) continue;
      const shown = [...c.actions.values()].filter((a) => actionShown(a, f));
      if (actionFilter && !shown.length) continue;
      rows.push([c, shown]);
    }
    rows.sort((a, b) => (a[0].lastSeen < b[0].lastSeen ? 1 : -1));
    const html = rows.slice(0, MAX_ROWS).map(([c, shown]) => {
      shown.sort((x, y) => y.seq - x.seq);
      const chips = shown.slice(0, 6).map(chip).join('') + (shown.length > 6 ? `<span class="muted"> +${shown.length - 6}</span>` : '');
      return `<tr data-customer-id="${esc(c.customerId)}" class="${c.customerId === selected ? 'sel' : ''}">` +
        `<td class="mono">${esc(short(c.customerId))}</td>` +
        `<td><span class="id-${esc(c.state)}">${esc(c.state)}</span>${c.userId ? ` <span class="user">${esc(c.userId)}</span>` : ''}</td>` +
        `<td class="mono muted">${esc(short(c.sessionId))}</td>` +
        `<td class="chips">${chips || '<span class="muted">—</span>'}</td>` +
        `<td class="num muted" data-ts="${esc(c.lastSeen)}">${ago(c.lastSeen)}</td></tr>`;
    }).join('');
    $('customers').tBodies[0].innerHTML = html || '<tr><td colspan="5" class="empty">no customers match</td></tr>';
    const more = $('more');
    more.hidden = rows.length <= MAX_ROWS;
    more.textContent = `showing the ${MAX_ROWS} most recently active of ${rows.length}; narrow the filters to see others`;
    let live = 0;
    for (const a of actions.values()) if (!isTerminal(a)) live++;
    $('counts').textContent = `${customers.size} customers · ${live} live actions`;
    const now = Date.now();
    eventTimes = eventTimes.filter((t) => now - t < 10000);
    $('rate').textContent = eventTimes.length ? `${(eventTimes.length / 10).toFixed(1)}/s` : '';
    drawMapOptions();
    if (selected) drawDetail();
  }

  function drawMaps() {
    const body = mapStats.map((m) => {
      const rate = m.acceptRate;
      const pct = rate === null || rate === undefined ? null : Math.round(rate * 100);
      return `<tr><td class="mono" title="${esc(m.actionMapId)}">${esc(short(m.actionMapId))} <span class="muted">v${esc(m.actionMapVersion)}</span></td>` +
        `<td>${esc(m.actionMediaType)}</td><td class="num">${m.counts?.offered ?? 0}</td><td class="num">${m.counts?.accepted ?? 0}</td>` +
        `<td>${pct === null ? '<span class="muted">—</span>' : `<span class="bar"><i data-pct="${pct}"></i></span> ${pct}%`}</td></tr>`;
    }).join('');
    $('maps').tBodies[0].innerHTML = body || '<tr><td colspan="5" class="empty">no actions yet</td></tr>';
    // Widths through the CSSOM: the console's content policy forbids inline style attributes.
    for (const i of $('maps').querySelectorAll('i[data-pct]')) i.style.width = i.dataset.pct + '%';
    drawMapOptions();
  }

  let mapOptionsKey = '';
  function drawMapOptions() {
    const ids = new Set(mapStats.map((m) => m.actionMapId));
    for (const a of actions.values()) ids.add(a.actionMapId);
    const key = [...ids].sort().join();
    if (key === mapOptionsKey) return;
    mapOptionsKey = key;
    const sel = $('f-map');
    const value = sel.value;
    sel.innerHTML = '<option value="">all</option>' + [...ids].sort().map((id) => `<option value="${esc(id)}">${esc(short(id))}</option>`).join('');
    sel.value = value;
  }

  function feed(ev) {
    const li = document.createElement('li');
    const what = ev.actionId ? `${short(ev.customerId)} · ${short(ev.actionId)}` : `${short(ev.customerId)}${ev.userId ? ' · ' + ev.userId : ''}`;
    li.innerHTML = `<span class="t">${esc((ev.timestamp || '').slice(11, 19))}</span> <span class="topic">${esc(ev.topic)}</span> <span class="muted mono">${esc(what)}</span>`;
    const list = $('feed');
    list.prepend(li);
    while (list.children.length > MAX_FEED) list.lastChild.remove();
  }

  let detailFor = null;
  let detailData = null;
  function select(id) {
    selected = id;
    $('detail').hidden = !id;
    detailFor = null;
    if (id) {
      api(`/v1/customers/${encodeURIComponent(id)}`).then((d) => {
        detailData = d;
        for (const s of d.sessions || []) {
          const m = customer(id).sessions.get(s.sessionId) || { pages: 0 };
          customer(id).sessions.set(s.sessionId, { ...m, ...s, pages: s.pagesViewed ?? m.pages, reason: s.endReason ?? m.reason });
        }
        drawDetail();
      }, () => {});
    }
    draw();
  }

  function drawDetail() {
    const c = customers.get(selected);
    if (!c) return;
    const sessions = [...c.sessions.values()].sort((a, b) => ((a.startedAt || '') < (b.startedAt || '') ? 1 : -1));
    const acts = [...c.actions.values()].sort((a, b) => b.seq - a.seq);
    $('detail-body').innerHTML =
      `<dl><dt>customerId</dt><dd class="mono">${esc(c.customerId)}</dd>` +
      `<dt>identity</dt><dd><span class="id-${esc(c.state)}">${esc(c.state)}</span></dd>` +
      `<dt>userId</dt><dd>${esc(c.userId || '—')}</dd>` +
      (detailData?.visitorId ? `<dt>visitor</dt><dd class="mono">${esc(detailData.visitorId)}</dd>` : '') + '</dl>' +
      `<h3>Sessions</h3><ul class="sessions">${sessions.map((s) =>
        `<li><span class="mono">${esc(short(s.sessionId))}</span> ${s.endedAt ? `<span class="muted">ended (${esc(s.reason || '')})</span>` : '<span class="ok">current</span>'}` +
        ` <span class="muted">${esc(s.pages || 0)} pages</span></li>`).join('') || '<li class="muted">none seen yet</li>'}</ul>` +
      `<h3>Actions</h3><ul class="acts">${acts.map((a) =>
        `<li>${chip(a)}<div class="muted small">map ${esc(short(a.actionMapId))} v${esc(a.actionMapVersion)} · ${esc(a.history.join(' → '))}` +
        `${a.errorMessage ? ` · <span class="err">${esc(a.errorCode)} ${esc(a.errorMessage)}</span>` : ''}</div></li>`).join('') || '<li class="muted">none</li>'}</ul>`;
  }

  // ---- wiring ---------------------------------------------------------------------------
  const stateSel = $('f-state');
  for (const s of STATES.webchat) stateSel.insertAdjacentHTML('beforeend', `<option>${s}</option>`);
  for (const id of ['f-map', 'f-media', 'f-state', 'f-live']) $(id).addEventListener('change', draw);
  $('f-text').addEventListener('input', dirty);
  $('customers').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-customer-id]');
    if (tr) select(tr.dataset.customerId);
  });
  $('close-detail').addEventListener('click', () => select(null));
  $('key').value = apiKey;
  $('auth').addEventListener('submit', (e) => {
    e.preventDefault();
    apiKey = $('key').value.trim();
    if (apiKey) sessionStorage.setItem(KEY_STORE, apiKey);
    else sessionStorage.removeItem(KEY_STORE);
    cursor = null;
    attempt = 0;
    connect();
  });
  setInterval(() => {
    for (const td of document.querySelectorAll('td[data-ts]')) td.textContent = ago(td.dataset.ts);
  }, 5000);
  connect();
})();
