// Runtime opt-outs: listed for everyone; added (with a reason) and removed
// (with a reason) by operators only. A viewer's page has no form and no
// buttons, and the server refuses a viewer's change with 403 anyway.

import { api } from './api.js';
import { h, fill, table, when, failure } from './dom.js';

const EXPIRIES = [['', 'never'], ['3600', '1 hour'], ['86400', '24 hours'], ['604800', '7 days'], ['2592000', '30 days']];

export function mount(root, ctx) {
  const message = h('div', { id: 'optout-message' });
  const list = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  fill(root, h('div', { class: 'stack' },
    ctx.operator ? addForm() : h('p', { class: 'notice', id: 'viewer-note' },
      'You are logged in as a viewer: opt-outs can be seen here, not changed.'),
    message,
    list));

  function say(text, bad) {
    fill(message, text ? h('p', { class: bad ? 'notice bad' : 'notice' }, text) : null);
  }

  function addForm() {
    const kind = h('select', { id: 'optout-kind' }, ['host', 'service', 'machine'].map(k => h('option', { value: k }, k)));
    const value = h('input', { id: 'optout-value', placeholder: '*.pastebin.com, a service, or a machine', spellcheck: 'false', required: true });
    const reason = h('input', { id: 'optout-reason', placeholder: 'why (kept in the change log)', required: true });
    const expires = h('select', { id: 'optout-expires' }, EXPIRIES.map(([v, l]) => h('option', { value: v }, l)));
    const field = (label, el, cls) => h('div', { class: `field ${cls || ''}` }, h('label', { for: el.id }, label), el);
    const form = h('form', { class: 'card', id: 'optout-form' },
      h('h2', {}, 'Add an opt-out'),
      h('p', { class: 'muted' }, 'Refuses matching requests at once, ahead of every policy rule, as rule optout-N.'),
      h('div', { class: 'form-row' },
        field('Kind', kind), field('Target', value, 'grow'), field('Reason', reason, 'grow'), field('Expires', expires),
        h('button', { id: 'optout-add', type: 'submit', class: 'primary' }, 'Add opt-out')));
    form.addEventListener('submit', async ev => {
      ev.preventDefault();
      const body = { [kind.value]: value.value.trim(), reason: reason.value.trim() };
      if (expires.value) body.expires = Number(expires.value);
      try {
        const o = await api('/v1/optouts', { method: 'POST', body });
        say(`optout-${o.id} is in force.`);
        value.value = '';
        reason.value = '';
        load();
      } catch (e) {
        say(`Not added: ${e.message}`, true);
      }
    });
    return form;
  }

  function removeCell(o) {
    const cell = h('td', { class: 'nowrap' });
    const start = () => {
      const reason = h('input', { class: 'remove-reason', placeholder: 'why remove it' });
      const confirm = h('button', { type: 'button', class: 'danger primary confirm-remove' }, 'Remove');
      const cancel = h('button', { type: 'button' }, 'Cancel');
      confirm.addEventListener('click', async () => {
        try {
          await api(`/v1/optouts/${o.id}?reason=${encodeURIComponent(reason.value.trim())}`, { method: 'DELETE' });
          say(`optout-${o.id} removed.`);
          load();
        } catch (e) {
          say(`Not removed: ${e.message}`, true);
        }
      });
      cancel.addEventListener('click', idle);
      fill(cell, reason, ' ', confirm, ' ', cancel);
      reason.focus();
    };
    const idle = () => fill(cell, h('button', { type: 'button', class: 'danger remove', onclick: start }, 'Remove…'));
    idle();
    return cell;
  }

  async function load() {
    let items;
    try {
      items = await api('/v1/optouts');
    } catch (e) {
      fill(list, failure(e));
      return;
    }
    const now = Date.now() / 1000;
    const cols = [{ label: 'Rule' }, { label: 'Target' }, { label: 'Reason' }, { label: 'Added' },
      { label: 'Expires' }, { label: 'By' }];
    if (ctx.operator) cols.push({ label: '' });
    fill(list, h('div', {}, h('h2', {}, 'Opt-outs in force'), table(cols, items.map(o => {
      const expired = o.expires && o.expires <= now;
      // The target is {"host": "..."}, {"service": "..."} or {"machine": "..."}.
      const [kind, value] = Object.entries(o.target)[0] || ['?', ''];
      return h('tr', { class: expired ? 'revoked' : null, 'data-id': o.id },
        h('td', { class: 'rule nowrap' }, `optout-${o.id}`),
        h('td', { class: 'mono' }, `${kind}: ${value}`),
        h('td', {}, o.reason),
        h('td', { class: 'nowrap' }, when(new Date(o.created * 1000).toISOString())),
        h('td', { class: 'nowrap' }, o.expires ? `${when(new Date(o.expires * 1000).toISOString())}${expired ? ' (expired)' : ''}` : 'never'),
        h('td', {}, o.actor),
        ctx.operator ? removeCell(o) : null);
    }), { id: 'optouts', empty: 'No opt-outs: the policy file alone decides.' })));
  }

  load();
}
