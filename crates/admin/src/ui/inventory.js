// Inventory: every destination each machine reached or tried, from the
// audit trail itself. This is where integrations nobody declared show up.

import { api } from './api.js';
import { h, fill, table, when, bytes, failure } from './dom.js';

export function mount(root) {
  const search = h('input', { id: 'inventory-filter', placeholder: 'filter: machine or host', spellcheck: 'false' });
  const summary = h('span', { class: 'muted', id: 'inventory-summary' });
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(root,
    h('div', { class: 'toolbar' },
      h('div', { class: 'field' }, h('label', { for: 'inventory-filter' }, 'Filter'), search),
      h('div', { class: 'spacer' }), summary),
    list);

  let rows = [];
  search.addEventListener('input', render);

  function render() {
    const q = search.value.trim().toLowerCase();
    const shown = rows.filter(d => !q || d.machine.toLowerCase().includes(q) || d.host.toLowerCase().includes(q));
    const machines = new Set(rows.map(d => d.machine)).size;
    summary.textContent = `${rows.length} destination${rows.length === 1 ? '' : 's'} from ${machines} machine${machines === 1 ? '' : 's'}` +
      (shown.length !== rows.length ? `, ${shown.length} shown` : '');
    const n = (d, k) => d.decisions[k] || 0;
    fill(list, table(
      [{ label: 'Machine' }, { label: 'Destination' }, { label: 'First seen' }, { label: 'Last seen' },
        { label: 'Allowed', class: 'num' }, { label: 'Refused', class: 'num' }, { label: 'Redacted', class: 'num' },
        { label: 'Sent', class: 'num' }, { label: 'Received', class: 'num' }],
      shown.map(d => h('tr', { class: n(d, 'deny') ? 'has-deny' : null },
        h('td', {}, d.machine),
        h('td', { class: 'mono' }, `${d.host}:${d.port}`),
        h('td', { class: 'nowrap' }, when(d.first_seen)),
        h('td', { class: 'nowrap' }, when(d.last_seen)),
        h('td', { class: 'num' }, n(d, 'allow')),
        h('td', { class: 'num' }, n(d, 'deny') ? h('b', { class: 'state expired' }, n(d, 'deny')) : 0),
        h('td', { class: 'num' }, n(d, 'redact')),
        h('td', { class: 'num nowrap' }, bytes(d.bytes_out)),
        h('td', { class: 'num nowrap' }, bytes(d.bytes_in)))),
      { id: 'inventory', empty: q ? 'Nothing matches.' : 'No destination seen yet: send a request through the proxy.' }));
  }

  api('/v1/inventory').then(data => {
    // Most recent first: what is happening now matters most.
    rows = data.sort((a, b) => (a.last_seen < b.last_seen ? 1 : -1));
    render();
  }).catch(e => fill(list, failure(e)));
}
