// Overview: the last hour at a glance, refreshed every ten seconds:
// decisions per minute by result, top refused destinations and refusing
// rules, and the policy in force on this node.

import { api } from './api.js';
import { h, fill, failure } from './dom.js';
import { decisionsChart, legend } from './chart.js';

const REFRESH_MS = 10000;

export function mount(root) {
  const stats = h('div', { class: 'stats', id: 'totals' });
  const chart = h('div', { class: 'chart', id: 'chart' }, h('p', { class: 'muted' }, 'Loading…'));
  const dests = h('div', { id: 'top-destinations' });
  const rules = h('div', { id: 'top-rules' });
  const policy = h('div', { id: 'policy' });
  fill(root, h('div', { class: 'stack' },
    stats,
    h('div', { class: 'card' }, h('h2', {}, 'Decisions per minute, last hour'), chart, legend()),
    h('div', { class: 'grid', id: 'overview-lists' },
      h('div', { class: 'card' }, h('h2', {}, 'Top refused destinations'), dests),
      h('div', { class: 'card' }, h('h2', {}, 'Top refusing rules'), rules),
      h('div', { class: 'card' }, h('h2', {}, 'Policy in force'), policy))));

  let last = null;
  let timer = null;

  async function load() {
    try {
      const [s, p] = await Promise.all([api('/v1/stats?window=3600'), api('/v1/policy')]);
      last = s;
      render(s, p);
    } catch (e) {
      fill(chart, failure(e));
    }
  }

  function render(s, p) {
    const t = s.totals;
    const all = t.allow + t.deny + t.redact;
    const stat = (cls, n, what) => h('div', { class: `card stat ${cls}` }, h('div', { class: 'n' }, n), h('div', { class: 'muted' }, what));
    fill(stats,
      stat('', all, 'decisions in the last hour'),
      stat('allow', t.allow, 'allowed'),
      stat('deny', t.deny, 'refused'),
      stat('redact', t.redact, 'redacted'),
      stat('', t.would_deny, 'allowed in report mode, refused if enforced'));
    draw();
    const max = Math.max(1, ...s.top_refused_destinations.map(d => d.count));
    fill(dests, ranked(s.top_refused_destinations, max,
      d => h('a', { href: `#/live?decision=deny&host=${encodeURIComponent(d.host)}`, class: 'mono' }, `${d.host}:${d.port}`),
      'No refusals in the last hour.'));
    const rmax = Math.max(1, ...s.top_refusing_rules.map(r => r.count));
    fill(rules, ranked(s.top_refusing_rules, rmax,
      r => h('a', { href: `#/live?decision=deny&rule=${encodeURIComponent(r.rule)}`, class: 'rule' }, r.rule),
      'No refusals in the last hour.'));
    fill(policy,
      h('p', {}, h('span', { class: 'hash', id: 'policy-hash' }, p.hash)),
      h('p', {}, `${p.rules} rules (runtime opt-outs included)`),
      p.warnings.length
        ? h('div', {}, h('p', { class: 'muted' }, 'Warnings:'), h('ul', {}, p.warnings.map(w => h('li', { class: 'mono' }, w))))
        : h('p', { class: 'muted' }, 'No warnings.'));
  }

  function draw() {
    if (!last) return;
    fill(chart, decisionsChart(last, chart.clientWidth || 900));
  }

  function ranked(items, max, name, empty) {
    if (!items.length) return h('p', { class: 'muted' }, empty);
    return h('table', {}, h('tbody', {}, items.map(it => {
      const bar = h('div', { class: 'bar' });
      bar.style.width = `${(it.count / max) * 100}%`;
      return h('tr', {}, h('td', { class: 'bar-cell' }, bar, h('span', {}, name(it))), h('td', { class: 'num' }, it.count));
    })));
  }

  const onResize = () => draw();
  window.addEventListener('resize', onResize);
  load();
  timer = setInterval(load, REFRESH_MS);
  return () => {
    clearInterval(timer);
    window.removeEventListener('resize', onResize);
  };
}
