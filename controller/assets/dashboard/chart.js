// Small line charts as inline SVG: one series over time, its range on the y axis and the
// first/last time on the x axis. Drawn from scratch; no library.

import { h } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';
const W = 320;
const H = 120;
const PAD = { left: 46, right: 8, top: 10, bottom: 22 };

function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// points: [{t: unix seconds, v: number}]; fmt: value -> label; max: fixed top (e.g. 100 %).
export function lineChart({ points, fmt, min = 0, max, minSpan = 1, label }) {
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': label });
  if (points.length === 0) {
    svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'axis' }, 'no samples yet'));
    return svg;
  }
  const t0 = points[0].t;
  const t1 = Math.max(points[points.length - 1].t, t0 + 60);
  const values = points.map((p) => p.v);
  // A flat series still gets a readable axis: at least `minSpan` between bottom and top.
  // `min: null` floats the bottom: the series sits mid-chart.
  const lo = Math.floor(min ?? Math.min(...values) - minSpan / 2);
  const hi = Math.max(max ?? Math.ceil(Math.max(...values)), lo + minSpan);
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * (H - PAD.top - PAD.bottom);

  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.append(s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid' }));
    svg.append(s('text', { x: PAD.left - 4, y: y(v) + 3, 'text-anchor': 'end', class: 'axis' }, fmt(v)));
  }
  const time = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  svg.append(s('text', { x: PAD.left, y: H - 4, class: 'axis' }, time(t0)));
  svg.append(s('text', { x: W - PAD.right, y: H - 4, 'text-anchor': 'end', class: 'axis' }, time(t1)));

  const coords = points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
  const base = y(lo).toFixed(1);
  svg.append(s('polygon', {
    points: `${x(t0).toFixed(1)},${base} ${coords.join(' ')} ${x(points[points.length - 1].t).toFixed(1)},${base}`,
    class: 'area',
  }));
  svg.append(s('polyline', { points: coords.join(' '), class: 'line' }));
  const last = points[points.length - 1];
  svg.append(s('circle', { cx: x(last.t), cy: y(last.v), r: 3, class: 'dot' }));
  if (points.length === 1) {
    svg.append(s('text', { x: (PAD.left + W) / 2, y: PAD.top + 14, 'text-anchor': 'middle', class: 'hint' }, 'one point a minute: the line follows'));
  }
  return svg;
}

// A chart in a card: its title, the value now, and the chart.
export function chartCard(title, now, chart, attrs = {}) {
  return h('div', { class: 'card chart-card', ...attrs },
    h('div', { class: 'chart-head' }, h('h3', {}, title), h('span', { class: 'now' }, now)), chart);
}
