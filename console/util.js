// Small helpers every view of the console shares: escaping, short ids, relative times and
// a redraw throttle. No state lives here.

/** `v` as text that is safe inside HTML, attributes included. */
export const esc = (v) =>
  String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

/** The first 8 characters of an id: enough to tell ids apart on screen. */
export const short = (id) => (id ? String(id).slice(0, 8) : '—');

export const $ = (id) => document.getElementById(id);

/** "12s", "4m", "3h" since an RFC 3339 time; "—" when there is none. */
export function ago(ts) {
  if (!ts) return '—';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m` : `${Math.floor(s / 3600)}h`;
}

/** Whole seconds as "42s", "3m 05s" or "1h 02m". */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds || 0));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** hh:mm:ss of an RFC 3339 time, in the browser's time zone. */
export const clock = (ts) => (ts ? new Date(ts).toLocaleTimeString([], { hour12: false }) : '');

/**
 * `fn` wrapped so that calls within `ms` of the first one run it once, on the next
 * animation frame after `ms`: many events a second cost a few redraws, not one each.
 */
export function throttle(fn, ms) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    setTimeout(() => requestAnimationFrame(() => {
      pending = false;
      fn();
    }), ms);
  };
}

/** A percentage with no decimals, or "—" for a ratio that does not exist yet. */
export const pct = (ratio) => (ratio === null || ratio === undefined || !Number.isFinite(ratio) ? '—' : `${Math.round(ratio * 100)}%`);
