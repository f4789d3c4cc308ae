// Small DOM and formatting helpers. Every text from the API goes in as a
// text node (never innerHTML): records carry hosts, paths and reasons that
// a request's sender chose.

/** h('tr', {class: 'x', onclick: f}, child, 'text', [more]) */
export function h(tag, attrs, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table in its scrolling frame: columns [{label, class}], rows of <tr>. */
export function table(columns, rows, { id, empty = 'Nothing yet.' } = {}) {
  const body = h('tbody', {}, rows);
  const t = h('table', { id },
    h('thead', {}, h('tr', {}, columns.map(c => h('th', { class: c.class }, c.label)))),
    body);
  const wrap = h('div', { class: 'table-wrap' }, t);
  if (!rows.length && empty) wrap.append(h('div', { class: 'empty' }, empty));
  return wrap;
}

const pad = n => String(n).padStart(2, '0');

/** HH:MM:SS in local time. */
export function clock(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return '';
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** YYYY-MM-DD HH:MM in local time. */
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A duration in words: 42 s, 5 min, 3 h, 12 days. */
export function span(secs) {
  const s = Math.abs(secs);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

export function bytes(n) {
  if (!n) return '0';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** What a record went to: "GET host:port /path", "CONNECT host:port (tls)",
 * or "DNS A host" for a lookup. */
export function destination(r) {
  if (r.protocol === 'dns') return `DNS ${r.method || ''} ${r.host}`;
  const hostport = `${r.host}:${r.port}`;
  if (r.method) return `${r.method} ${hostport}${r.path || ''}`;
  return `CONNECT ${hostport} (${r.protocol})`;
}

export function badge(decision) {
  return h('span', { class: `badge ${decision}` }, decision);
}

/** Data classes found, with counts ("email ×2"). */
export function classes(data) {
  return Object.entries(data || {}).map(([k, n]) =>
    h('span', { class: 'chip' }, n > 1 ? `${k} ×${n}` : k));
}

/** An error as a line in a view. */
export function failure(e) {
  return h('p', { class: 'notice bad' }, `Could not load: ${e.message || e}`);
}
