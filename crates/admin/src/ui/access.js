// Access review: every machine credential, with what needs a person's eye
// first: those expiring within a week, then the expired, then the rest by
// last use (the longest unused first: candidates for revocation).

import { api } from './api.js';
import { h, fill, table, when, span, failure } from './dom.js';

/** Seconds: a credential expiring sooner than this is highlighted. */
const SOON = 7 * 86400;

function status(m) {
  if (m.state === 'revoked') return 'revoked';
  if (m.state === 'expired') return 'expired';
  if (m.expires_in_secs != null && m.expires_in_secs < SOON) return 'expiring';
  return 'active';
}

const ORDER = { expiring: 0, expired: 1, active: 2, revoked: 3 };

export function mount(root) {
  const summary = h('div', { class: 'stats', id: 'access-summary' });
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const grants = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(root, h('div', { class: 'stack' }, summary, list,
    h('h2', {}, 'Grants that expire when unused'), grants));
  api('/v1/grants').then(rows => {
    // The closest to lapsing first: they need a renewal or a goodbye.
    rows.sort((a, b) => a.expires_in_secs - b.expires_in_secs);
    fill(grants, table(
      [{ label: 'Rule' }, { label: 'Machine' }, { label: 'State' }, { label: 'Last used' }, { label: 'Lapses' }],
      rows.map(g => {
        const st = g.state === 'expired' ? 'expired' : g.expires_in_secs < SOON ? 'expiring' : 'active';
        return h('tr', { class: st, 'data-rule': g.rule, 'data-machine': g.machine || '' },
          h('td', { class: 'mono' }, g.rule),
          h('td', { class: 'mono' }, g.machine || h('span', { class: 'muted' }, 'any machine that never used it')),
          h('td', {}, h('span', { class: `state ${st}` }, st === 'expiring' ? 'lapses soon' : g.state)),
          h('td', { class: 'nowrap' }, g.last_used ? `${span(g.idle_secs)} ago` : h('span', { class: 'muted' }, 'never')),
          h('td', { class: 'nowrap' }, g.state === 'expired' ? 'lapsed' : `in ${span(g.expires_in_secs)}`));
      }),
      { id: 'grants', empty: 'No rule in the policy has expire_if_unused.' }));
  }).catch(e => fill(grants, failure(e)));

  api('/v1/machines').then(machines => {
    const idle = m => (m.idle_secs == null ? Infinity : m.idle_secs);
    machines.sort((a, b) => ORDER[status(a)] - ORDER[status(b)] || idle(b) - idle(a));
    const count = s => machines.filter(m => status(m) === s).length;
    const never = machines.filter(m => m.last_used == null && m.state === 'active').length;
    const stat = (cls, n, what) => h('div', { class: `card stat ${cls}` }, h('div', { class: 'n' }, n), h('div', { class: 'muted' }, what));
    fill(summary,
      stat('allow', count('active') + count('expiring'), 'active credentials'),
      stat('redact', count('expiring'), 'expire within 7 days'),
      stat('deny', count('expired'), 'expired'),
      stat('', count('revoked'), 'revoked'),
      stat('', never, 'active, never used'));
    fill(list, table(
      [{ label: 'Machine' }, { label: 'Roles' }, { label: 'Env' }, { label: 'State' }, { label: 'Created' },
        { label: 'Expires' }, { label: 'Last used' }, { label: 'Revoked' }],
      machines.map(m => {
        const st = status(m);
        const expires = m.expires == null ? 'never'
          : `${when(m.expires)} (${m.expires_in_secs >= 0 ? 'in ' + span(m.expires_in_secs) : span(m.expires_in_secs) + ' ago'})`;
        return h('tr', { class: st, 'data-name': m.name },
          h('td', { class: 'mono' }, m.name),
          h('td', {}, m.roles.join(', ') || h('span', { class: 'muted' }, 'none')),
          h('td', {}, m.env || h('span', { class: 'muted' }, '—')),
          h('td', {}, h('span', { class: `state ${st}` }, st === 'expiring' ? 'expires soon' : m.state)),
          h('td', { class: 'nowrap' }, when(m.created)),
          h('td', { class: 'nowrap' }, expires),
          h('td', { class: 'nowrap' }, m.last_used ? `${span(m.idle_secs)} ago` : h('span', { class: 'muted' }, 'never')),
          h('td', { class: 'nowrap' }, m.revoked ? when(m.revoked) : ''));
      }),
      { id: 'machines', empty: 'No machines registered. `veto machine add NAME --role R` registers one.' }));
  }).catch(e => fill(list, failure(e)));
}
