// Segments and companies: rendered from GET /v1/segments and GET /v1/companies when the hub
// has them, and "not available on this hub" when it answers 404 (an older hub, or one
// built without them). A row opens its members, each a link to the visitor.
import { esc, short, clock } from './util.js';

export const SECTIONS = {
  segments: {
    list: '/v1/segments',
    items: (b) => b.segments || [],
    members: (id) => `/v1/segments/${encodeURIComponent(id)}/visitors?limit=100`,
    columns: [['name', (s) => esc(s.name)], ['match', (s) => esc(s.match || 'all')], ['conditions', (s) => esc((s.conditions || []).length)], ['visitors', (s) => esc(s.visitorCount ?? '—')]],
  },
  companies: {
    list: '/v1/companies?limit=100',
    items: (b) => b.companies || [],
    members: (id) => `/v1/visitors?companyId=${encodeURIComponent(id)}&limit=100`,
    columns: [['company', (c) => `${esc(c.name || c.id)} <span class="muted mono small">${esc(c.id)}</span>`], ['visitors', (c) => esc(c.visitorCount ?? '—')], ['last seen', (c) => esc(clock(c.lastSeenAt))]],
  },
};

/** Reads and draws section `name` ('segments' or 'companies') into `el`. */
export async function drawSection(hub, name, el) {
  const section = SECTIONS[name];
  let answer;
  try {
    answer = await hub.get(section.list);
  } catch (e) {
    el.innerHTML = `<p class="empty err">could not reach the hub: ${esc(e.message)}</p>`;
    return;
  }
  if (answer.status === 404) {
    el.innerHTML = `<p class="empty" data-unavailable>${esc(name)}: not available on this hub</p>`;
    return;
  }
  if (answer.status !== 200) {
    el.innerHTML = `<p class="empty err">${esc(name)}: ${esc(answer.body?.error?.message || `HTTP ${answer.status}`)}</p>`;
    return;
  }
  const items = section.items(answer.body);
  const open = el.querySelector('tr.sel')?.dataset.id;
  el.innerHTML = `<table class="directory"><thead><tr>${section.columns.map(([h]) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>` +
    (items.map((item) => `<tr data-id="${esc(item.id)}" class="${item.id === open ? 'sel' : ''}">${section.columns.map(([, cell]) => `<td>${cell(item)}</td>`).join('')}</tr>`).join('') ||
      `<tr><td colspan="${section.columns.length}" class="empty">no ${esc(name)} yet</td></tr>`) +
    '</tbody></table><div class="members"></div>';
  el.querySelector('tbody').onclick = (e) => {
    const tr = e.target.closest('tr[data-id]');
    if (!tr) return;
    for (const row of el.querySelectorAll('tr.sel')) row.classList.remove('sel');
    tr.classList.add('sel');
    drawMembers(hub, section.members(tr.dataset.id), el.querySelector('.members'));
  };
  if (open) drawMembers(hub, section.members(open), el.querySelector('.members'));
}

async function drawMembers(hub, path, el) {
  try {
    const body = await hub.json(path);
    const visitors = body.visitors || [];
    el.innerHTML = `<h3>Visitors <span class="muted">${esc(body.total ?? visitors.length)}</span></h3><ul class="member-list">` +
      (visitors.map((v) => `<li><a href="#/visitors/${esc(encodeURIComponent(v.visitorId || v.id))}">${esc(v.name || v.userId || short(v.visitorId || v.id))}</a> ` +
        `<span class="muted small">${esc(v.email || '')} ${esc(v.identity?.state || '')}</span></li>`).join('') || '<li class="muted">none</li>') + '</ul>';
  } catch (e) {
    el.innerHTML = `<p class="err">${esc(e.message)}</p>`;
  }
}
