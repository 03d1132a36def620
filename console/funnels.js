// Funnels per action map, from GET /v1/stats/action-maps: how many actions reached each
// step, the drop-off between steps, and the share of offers that ended otherwise. The
// numbers are the endpoint's, summed over the versions the filter keeps; nothing is
// counted in the browser, so the funnel and the hub always agree.
import { esc, short, pct } from './util.js';

// A content offer is done once accepted: PROTOCOL.md section 2 makes `accepted` terminal
// for it and gives it no `engaged` state, so its funnel has two steps.
export const STEPS = {
  webchat: ['offered', 'accepted', 'started', 'engaged', 'ended'],
  contentoffer: ['offered', 'accepted'],
};
export const OUTCOMES = {
  webchat: ['rejected', 'ignored', 'timedout', 'errored'],
  contentoffer: ['rejected', 'ignored', 'errored'],
};

/**
 * One funnel per action map and media type, over the stats rows that pass the filter
 * (`media`, `version`: '' keeps every value). Each step's `drop` is how many of the
 * previous step went no further; each outcome's `share` is over the offered.
 */
export function funnels(rows, { media = '', version = '' } = {}) {
  const byMap = new Map();
  for (const row of rows) {
    if (media && row.actionMediaType !== media) continue;
    if (version !== '' && String(row.actionMapVersion) !== String(version)) continue;
    const key = `${row.actionMapId} ${row.actionMediaType}`;
    let f = byMap.get(key);
    if (!f) {
      f = { actionMapId: row.actionMapId, mediaType: row.actionMediaType, versions: [], counts: {} };
      byMap.set(key, f);
    }
    f.versions.push(row.actionMapVersion);
    for (const [state, n] of Object.entries(row.counts || {})) f.counts[state] = (f.counts[state] || 0) + n;
  }
  return [...byMap.values()].map((f) => {
    const steps = (STEPS[f.mediaType] || []).map((state, i, all) => {
      const count = f.counts[state] || 0;
      const prev = i ? f.counts[all[i - 1]] || 0 : null;
      return { state, count, drop: prev === null ? null : prev - count, conversion: prev ? count / prev : null };
    });
    const offered = f.counts.offered || 0;
    const outcomes = (OUTCOMES[f.mediaType] || []).map((state) => ({ state, count: f.counts[state] || 0, share: offered ? (f.counts[state] || 0) / offered : null }));
    return { ...f, steps, outcomes, qualified: f.counts.qualified || 0 };
  });
}

/** The funnels' HTML: one card each, bars scaled to the offered. */
export function renderFunnels(list) {
  if (!list.length) return '<p class="empty">no action map matches</p>';
  return list.map((f) => {
    const top = f.steps[0]?.count || 0;
    const steps = f.steps.map((s) =>
      `<li data-step="${esc(s.state)}" data-count="${s.count}"><span class="label s-${esc(s.state)}">${esc(s.state)}</span>` +
      `<span class="bar wide"><i data-pct="${top ? Math.round((s.count / top) * 100) : 0}"></i></span>` +
      `<b class="num count">${s.count}</b>` +
      `<span class="muted small drop">${s.drop === null ? '' : `−${s.drop} (${pct(s.conversion === null ? null : 1 - s.conversion)} drop)`}</span></li>`).join('');
    const outcomes = f.outcomes.map((o) =>
      `<span class="outcome s-${esc(o.state)}" data-outcome="${esc(o.state)}" data-count="${o.count}">${esc(o.state)} <b>${o.count}</b> · ${pct(o.share)}</span>`).join(' ');
    return `<article class="panel funnel" data-map="${esc(f.actionMapId)}" data-media="${esc(f.mediaType)}">` +
      `<h3><span class="mono" title="${esc(f.actionMapId)}">${esc(short(f.actionMapId))}</span> · ${esc(f.mediaType)} ` +
      `<span class="muted">v${esc([...new Set(f.versions)].sort((a, b) => a - b).join(', v'))}</span></h3>` +
      `<ol class="steps">${steps}</ol><p class="outcomes small">of offered: ${outcomes}` +
      (f.qualified ? ` <span class="muted">· ${f.qualified} qualified</span>` : '') + '</p></article>';
  }).join('');
}
