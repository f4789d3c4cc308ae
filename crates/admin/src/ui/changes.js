// The change log: who changed what, when and why, newest first, with the
// before and after of each change side by side, field by field.

import { api } from './api.js';
import { h, fill, table, when, failure } from './dom.js';

const show = v => (v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));

/** Times are Unix seconds in the stored values: shown as dates. */
const TIME_FIELDS = ['created', 'expires', 'removed'];
const shown = (k, v) =>
  TIME_FIELDS.includes(k.split('.').pop()) && typeof v === 'number'
    ? when(new Date(v * 1000).toISOString())
    : show(v);

/** Flattens {a: {b: 1}} to [['a.b', 1]], so nested targets diff by field. */
function flat(v, prefix = '', out = new Map()) {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flat(x, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) {
    out.set(prefix, v);
  }
  return out;
}

function diff(before, after) {
  const b = flat(before);
  const a = flat(after);
  const keys = [...new Set([...b.keys(), ...a.keys()])];
  if (!keys.length) return h('span', { class: 'muted' }, 'no fields');
  return h('table', { class: 'diff' }, h('tbody', {}, keys.map(k => {
    const cls = !b.has(k) ? 'added' : !a.has(k) ? 'removed' : show(b.get(k)) !== show(a.get(k)) ? 'changed' : 'same';
    return h('tr', { class: cls },
      h('td', { class: 'muted' }, k),
      h('td', { class: 'before' }, b.has(k) ? shown(k, b.get(k)) : '—'),
      h('td', {}, '→'),
      h('td', { class: 'after' }, a.has(k) ? shown(k, a.get(k)) : '—'));
  })));
}

export function mount(root) {
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(root, list);
  api('/v1/changes').then(items => {
    items.sort((x, y) => y.seq - x.seq);
    fill(list, table(
      [{ label: 'Time' }, { label: 'Actor' }, { label: 'Action' }, { label: 'Reason' }, { label: 'Before → after' }],
      items.map(c => h('tr', {},
        h('td', { class: 'nowrap', title: c.time }, when(c.time)),
        h('td', { class: 'nowrap' }, c.actor),
        h('td', { class: 'nowrap mono' }, c.action),
        h('td', {}, c.reason || h('span', { class: 'muted' }, 'none given')),
        h('td', {}, diff(c.before, c.after)))),
      { id: 'changes', empty: 'No changes yet.' }));
  }).catch(e => fill(list, failure(e)));
}
