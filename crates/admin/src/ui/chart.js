// Decisions per bucket as stacked SVG bars (allow, redact, deny from the
// bottom), with what full enforcement would refuse as a dashed line. Drawn
// by hand: a chart library would weigh more than the whole dashboard.

import { h } from './dom.js';

const HEIGHT = 220;
const PAD = { left: 44, right: 12, top: 10, bottom: 26 };
const pad = n => String(n).padStart(2, '0');

/** A round step for four grid lines covering m: 1, 2, 5, 10, 20... */
function niceStep(m) {
  const raw = Math.max(1, m / 4);
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const f of [1, 2, 5, 10]) if (f * p >= raw) return f * p;
  return 10 * p;
}

function label(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** stats: the answer of /v1/stats; width: pixels available. */
export function decisionsChart(stats, width) {
  const w = Math.max(320, Math.floor(width));
  const s = stats.series;
  const n = s.allow.length;
  const total = i => s.allow[i] + s.redact[i] + s.deny[i];
  let max = 0;
  for (let i = 0; i < n; i++) max = Math.max(max, total(i), s.would_deny[i]);
  const step = niceStep(max);
  const top = 4 * step;
  const plotW = w - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const bw = plotW / n;
  const y = v => PAD.top + plotH - (v / top) * plotH;
  const svg = h('svg:svg', {
    viewBox: `0 0 ${w} ${HEIGHT}`, width: w, height: HEIGHT, role: 'img', id: 'decisions-chart',
    'aria-label': `Decisions per ${stats.bucket / 60} minute${stats.bucket === 60 ? '' : 's'}`,
  });
  // Grid and y axis: four steps.
  for (let k = 0; k <= 4; k++) {
    const v = step * k;
    const yy = y(v);
    svg.append(h('svg:line', { class: 'grid-line', x1: PAD.left, x2: w - PAD.right, y1: yy, y2: yy }));
    svg.append(h('svg:text', { class: 'axis', x: PAD.left - 6, y: yy + 4, 'text-anchor': 'end' },
      v));
  }
  // Bars.
  const bucketMs = stats.bucket * 1000;
  for (let i = 0; i < n; i++) {
    let base = 0;
    const x = PAD.left + i * bw + Math.min(1, bw * 0.15);
    const width = Math.max(1, bw - Math.min(2, bw * 0.3));
    const from = stats.start_ms + i * bucketMs;
    const tip = `${label(from)}: ${s.allow[i]} allowed, ${s.redact[i]} redacted, ${s.deny[i]} refused` +
      (s.would_deny[i] ? ` (${s.would_deny[i]} allowed in report mode that enforcement would refuse)` : '');
    const g = h('svg:g', {}, h('svg:title', {}, tip));
    for (const k of ['allow', 'redact', 'deny']) {
      const v = s[k][i];
      if (!v) continue;
      g.append(h('svg:rect', { class: k, x, width, y: y(base + v), height: y(base) - y(base + v) }));
      base += v;
    }
    // An invisible full-height target so the tooltip shows on empty bars too.
    g.append(h('svg:rect', { x, width, y: PAD.top, height: plotH, fill: 'transparent' }));
    svg.append(g);
  }
  // Would-deny line.
  if (s.would_deny.some(v => v > 0)) {
    const pts = s.would_deny.map((v, i) => `${PAD.left + (i + 0.5) * bw},${y(v)}`).join(' ');
    svg.append(h('svg:polyline', { class: 'would', points: pts }));
  }
  // X axis: a label every ~80 px, on whole buckets.
  // The last label stops short of the edge rather than being cut off.
  const every = Math.max(1, Math.ceil(80 / bw));
  for (let i = 0; i <= n; i += every) {
    if (PAD.left + i * bw > w - 24) break;
    svg.append(h('svg:text', { class: 'axis', x: PAD.left + i * bw, y: HEIGHT - 8, 'text-anchor': 'middle' },
      label(stats.start_ms + i * bucketMs)));
  }
  return svg;
}

export function legend() {
  const item = (cls, text) => h('span', {}, h('i', { class: cls }), text);
  return h('div', { class: 'legend' },
    item('allow', 'allowed'), item('redact', 'redacted'), item('deny', 'refused'),
    item('would', 'allowed in report mode, refused if enforced'));
}
