// One decision in full: the record as the store keeps it (completed with
// status and bytes once the exchange ended) and the policy trace, why
// each rule did or did not match, from GET /v1/explain.

import { api } from './api.js';
import { h, fill, badge, classes, destination, bytes, when } from './dom.js';

let current = null;

export function close() {
  if (!current) return;
  current.back.remove();
  current.panel.remove();
  document.removeEventListener('keydown', current.onKey);
  current = null;
}

/** Opens the drawer for a record (as the stream sent it). */
export function open(record) {
  close();
  const body = h('div', { id: 'detail-body' }, h('p', { class: 'muted' }, 'Loading the trace…'));
  const panel = h('aside', { class: 'drawer', id: 'detail', role: 'dialog', 'aria-label': 'Decision' },
    h('header', {},
      badge(record.decision),
      h('h2', { id: 'detail-title' }, destination(record)),
      h('button', { id: 'detail-close', type: 'button', onclick: close }, 'Close')),
    summary(record),
    body);
  const back = h('div', { class: 'drawer-back', onclick: close });
  const onKey = e => { if (e.key === 'Escape') close(); };
  document.addEventListener('keydown', onKey);
  document.body.append(back, panel);
  current = { panel, back, onKey };
  load(record, body);
}

function summary(r) {
  return h('div', {},
    h('p', { class: 'reason-text', id: 'detail-reason' }, r.reason),
    h('p', {}, 'Rule ', h('b', { class: 'rule', id: 'detail-rule' }, r.rule),
      r.would ? h('span', { class: 'badge would' }, `would ${r.would}`) : null));
}

async function load(record, body) {
  let x;
  try {
    x = await api(`/v1/explain?id=${encodeURIComponent(record.id)}`);
  } catch (e) {
    fill(body, h('p', { class: 'notice bad' }, `No trace: ${e.message}`), fields(record));
    return;
  }
  if (!current || !document.body.contains(body)) return;
  const r = x.record;
  const ex = x.explain;
  const notes = [];
  if (!x.same_policy) {
    notes.push(h('p', { class: 'notice' },
      'This record was decided under another policy (', h('span', { class: 'hash' }, r.policy),
      '); the trace shows how the policy in force now (', h('span', { class: 'hash' }, ex.policy), ') decides it.'));
  }
  if (ex.decision !== r.decision || ex.rule !== r.rule) {
    notes.push(h('p', { class: 'notice' },
      `Decided again now, this request would be ${ex.decision} by ${ex.rule}: `, ex.reason));
  }
  if (ex.unknown_classes) {
    notes.push(h('p', { class: 'notice' }, `Data classes the policy in force does not define: ${ex.unknown_classes.join(', ')}`));
  }
  fill(body, notes, fields(r), trace(ex), raw(x));
}

function fields(r) {
  const row = (k, v) => [h('dt', {}, k), h('dd', {}, v ?? '—')];
  return h('div', {},
    h('h2', {}, 'Record'),
    h('dl', { class: 'kv' },
      row('Time', `${when(r.time)} (${r.time})`),
      row('Machine', r.machine),
      row('Protocol', r.protocol),
      row('Method', r.method),
      row('Host', `${r.host}:${r.port}`),
      row('Path', r.path),
      row('Addresses', (r.ips || []).join(', ') || '—'),
      row('Data classes', Object.keys(r.data || {}).length ? classes(r.data) : 'none found'),
      row('Decision', [badge(r.decision), r.would ? h('span', { class: 'badge would' }, `would ${r.would}`) : null]),
      row('Status', r.status != null ? String(r.status) : 'not ended yet'),
      row('Bytes', `${bytes(r.bytes_out)} out, ${bytes(r.bytes_in)} in`),
      row('Duration', r.duration_ms != null ? `${r.duration_ms} ms` : '—'),
      row('Policy', h('span', { class: 'hash' }, r.policy)),
      row('Record id', h('span', { class: 'mono' }, r.id)),
      row('Chain hash', h('span', { class: 'hash' }, r.hash || '—'))));
}

function trace(ex) {
  const rows = (ex.trace || []).map(t => {
    const decides = t.rule === ex.rule;
    const cls = [t.matched ? 'hit' : '', decides ? `decides ${t.effect}` : ''].join(' ').trim();
    return h('tr', { class: cls || null },
      h('td', { class: 'num' }, t.line || ''),
      h('td', { class: 'rule nowrap' }, t.rule, decides ? h('span', { class: 'muted' }, ' ← decides') : null),
      h('td', {}, t.effect),
      h('td', {}, t.mode),
      h('td', {}, t.matched ? h('span', { class: 'ok' }, '✓') : h('span', { class: 'no' }, '✗')),
      h('td', {}, t.why));
  });
  const head = ['Line', 'Rule', 'Effect', 'Mode', 'Match', 'Why'].map(l => h('th', {}, l));
  const byDefault = ['default', 'private-network'].includes(ex.rule)
    ? h('p', { class: 'muted' }, `No rule decided: ${ex.rule === 'default' ? 'the policy\u2019s default' : 'the private-network guard'} did.`)
    : null;
  return h('div', {},
    h('h2', {}, 'Policy trace'),
    h('p', {}, 'Decided ', badge(ex.decision), ' by ', h('b', { class: 'rule' }, ex.rule), ': ', ex.reason),
    byDefault,
    h('div', { class: 'table-wrap' },
      h('table', { class: 'trace', id: 'trace' }, h('thead', {}, h('tr', {}, head)), h('tbody', {}, rows))));
}

function raw(x) {
  return h('details', {},
    h('summary', {}, 'Raw JSON'),
    h('pre', { class: 'raw' }, JSON.stringify(x, null, 2)));
}
