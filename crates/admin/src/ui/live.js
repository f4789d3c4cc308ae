// Live decisions: the recent records, then every new one as it is
// committed (EventSource on /v1/decisions/stream, which carries the
// session cookie). Filters are the API's (exact match, like `veto tail`),
// applied by the server to both the history and the stream.

import { api, query } from './api.js';
import { h, fill, clock, destination, badge, classes } from './dom.js';
import * as detail from './detail.js';

/** Rows kept on the page; older ones drop off the bottom. */
const MAX_ROWS = 500;
/** Events held while paused; beyond this they count as skipped. */
const MAX_PENDING = 2000;

const COLUMNS = [
  { label: 'Time' }, { label: 'Machine' }, { label: 'Destination' }, { label: 'Decision' },
  { label: 'Rule' }, { label: 'Reason' }, { label: 'Data' }, { label: 'Status', class: 'num' },
];

export function mount(root, ctx) {
  const filters = {
    decision: ctx.params.get('decision') || '',
    machine: ctx.params.get('machine') || '',
    host: ctx.params.get('host') || '',
    rule: ctx.params.get('rule') || '',
  };
  const state = {
    es: null, paused: false, pending: [], skipped: 0, shown: 0,
    seen: new Set(), byId: new Map(), timer: null, stopped: false,
  };

  const input = (name, placeholder) => h('input', {
    id: `filter-${name}`, value: filters[name], placeholder, spellcheck: 'false',
    onkeydown: e => { if (e.key === 'Enter') apply(); },
  });
  const decision = h('select', { id: 'filter-decision' },
    ['', 'allow', 'deny', 'redact'].map(d =>
      h('option', { value: d, selected: d === filters.decision }, d || 'all')));
  decision.addEventListener('change', () => apply());
  const fields = { machine: input('machine', 'any machine'), host: input('host', 'exact host'), rule: input('rule', 'any rule') };
  const dot = h('span', { class: 'dot' });
  const liveText = h('span', { id: 'live-state' }, 'connecting…');
  const skipped = h('span', { id: 'skipped', class: 'pill', title: 'Decisions the browser fell too far behind to receive' }, 'skipped 0');
  const shown = h('span', { id: 'shown', class: 'muted' });
  const pause = h('button', { id: 'pause', type: 'button', onclick: toggle }, 'Pause');
  const tbody = h('tbody');

  const field = (label, el) => h('div', { class: 'field' }, h('label', { for: el.id }, label), el);
  fill(root,
    h('div', { class: 'toolbar' },
      field('Decision', decision), field('Machine', fields.machine),
      field('Host', fields.host), field('Rule', fields.rule),
      h('button', { id: 'apply', type: 'button', class: 'primary', onclick: apply }, 'Apply'),
      h('button', { id: 'clear', type: 'button', onclick: clear }, 'Clear'),
      h('div', { class: 'spacer' }),
      h('div', { class: 'status-line' }, dot, liveText, skipped, shown, pause)),
    h('div', { class: 'table-wrap' },
      h('table', { id: 'decisions' },
        h('thead', {}, h('tr', {}, COLUMNS.map(c => h('th', { class: c.class }, c.label)))),
        tbody)));

  function row(r) {
    const tr = h('tr', { class: `${r.decision} fresh`, 'data-id': r.id, onclick: () => detail.open(r) },
      h('td', { class: 'nowrap mono', title: r.time }, clock(r.time)),
      h('td', { class: 'nowrap' }, r.machine),
      h('td', { class: 'dest mono', title: destination(r) }, destination(r)),
      h('td', { class: 'nowrap' }, badge(r.decision),
        r.would ? h('span', { class: 'badge would', title: 'what full enforcement would do' }, `would ${r.would}`) : null),
      h('td', { class: 'rule nowrap' }, r.rule),
      h('td', { class: 'reason', title: r.reason }, r.reason),
      h('td', {}, classes(r.data)),
      h('td', { class: 'num status' }, status(r)));
    setTimeout(() => tr.classList.remove('fresh'), 1300);
    return tr;
  }

  function status(r) {
    if (r.status != null) return String(r.status);
    return h('span', { class: 'muted', title: 'the exchange has not ended yet' }, '…');
  }

  function add(r) {
    if (state.seen.has(r.id)) return;
    state.seen.add(r.id);
    state.byId.set(r.id, r);
    tbody.prepend(row(r));
    while (tbody.rows.length > MAX_ROWS) {
      const last = tbody.rows[tbody.rows.length - 1];
      // The id set shrinks with the table: a page left open for days must
      // not grow without bound. Duplicates only arrive around (re)connects.
      state.byId.delete(last.dataset.id);
      state.seen.delete(last.dataset.id);
      last.remove();
    }
    counts();
  }

  function counts() {
    skipped.textContent = `skipped ${state.skipped}`;
    skipped.className = state.skipped ? 'pill warn' : 'pill';
    const held = state.pending.length ? `, ${state.pending.length} held` : '';
    shown.textContent = `${tbody.rows.length} shown${held}`;
  }

  function setLive(text, cls) {
    liveText.textContent = text;
    dot.className = `dot ${cls || ''}`;
  }

  function onDecision(r) {
    if (!state.paused) return add(r);
    if (state.pending.length < MAX_PENDING) state.pending.push(r);
    else state.skipped++;
    counts();
  }

  function toggle() {
    state.paused = !state.paused;
    pause.textContent = state.paused ? 'Resume' : 'Pause';
    if (state.paused) {
      setLive('paused', 'paused');
    } else {
      setLive('live');
      const held = state.pending;
      state.pending = [];
      for (const r of held) add(r);
    }
    counts();
  }

  // Subscribe first, then read the history: nothing committed between the
  // two is lost, and what arrives twice is shown once (by id).
  async function connect() {
    if (state.es) state.es.close();
    tbody.replaceChildren();
    state.seen.clear();
    state.byId.clear();
    state.pending = [];
    const qs = query(filters);
    let queue = [];
    const es = new EventSource(`/v1/decisions/stream${qs}`);
    state.es = es;
    es.addEventListener('decision', e => {
      const r = JSON.parse(e.data);
      if (queue) queue.push(r); else onDecision(r);
    });
    es.addEventListener('skipped', e => { state.skipped += Number(e.data) || 0; counts(); });
    es.addEventListener('open', () => setLive(state.paused ? 'paused' : 'live', state.paused ? 'paused' : ''));
    es.addEventListener('error', () => {
      if (state.stopped) return;
      setLive(es.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting…', 'down');
      // A closed stream may be an ended session: ask, and the 401 handler
      // returns to the login form.
      if (es.readyState === EventSource.CLOSED) api('/v1/whoami').catch(() => {});
    });
    try {
      const recent = await api(`/v1/decisions${query({ ...filters, limit: 200 })}`);
      for (const r of recent) add(r);
    } catch (e) {
      setLive(`history unavailable: ${e.message}`, 'down');
    }
    const held = queue;
    queue = null;
    for (const r of held) onDecision(r);
    for (const tr of tbody.rows) tr.classList.remove('fresh');
    counts();
  }

  // The status of a forwarded request is known only when it ends, after
  // its row appeared: fill the missing ones in from the store now and then.
  async function refreshStatuses() {
    const waiting = [...tbody.rows].filter(tr => state.byId.get(tr.dataset.id)?.status == null);
    if (!waiting.length) return;
    try {
      const recent = await api(`/v1/decisions${query({ ...filters, since: 300, limit: 1000 })}`);
      const byId = new Map(recent.map(r => [r.id, r]));
      for (const tr of waiting) {
        const r = byId.get(tr.dataset.id);
        if (r && r.status != null) {
          state.byId.set(r.id, r);
          fill(tr.querySelector('td.status'), String(r.status));
        }
      }
    } catch { /* next time */ }
  }

  function apply() {
    filters.decision = decision.value;
    for (const k of ['machine', 'host', 'rule']) filters[k] = fields[k].value.trim();
    connect();
  }

  function clear() {
    decision.value = '';
    for (const k of ['machine', 'host', 'rule']) fields[k].value = '';
    apply();
  }

  connect();
  state.timer = setInterval(refreshStatuses, 3000);
  return () => {
    state.stopped = true;
    if (state.es) state.es.close();
    clearInterval(state.timer);
    detail.close();
  };
}
