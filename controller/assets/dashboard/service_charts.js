// Per-service charts on the device page: CPU, memory, restarts and network of each service
// over the health history. A sample counts services by position; the controller stored the
// names it had for that generation in `point.services`, so a redeploy that reorders or
// renames services never mixes two services in one line.

import { h } from './dom.js';
import { bytes, cpu, kib } from './format.js';
import { lineChart, chartCard } from './chart.js';

const nameOf = (point, index) => point.services[index] ?? `#${index}`;

// { name: [{ t, c }] }: each service's container samples over time, in time order.
function byService(points) {
  const series = new Map();
  for (const p of points) {
    for (const c of p.sample.containers) {
      const name = nameOf(p, c.service);
      if (!series.has(name)) series.set(name, []);
      series.get(name).push({ t: p.bucket_unix, c });
    }
  }
  return series;
}

// Bytes per second in and out between consecutive samples of the cumulative KiB counters;
// a counter that went down (the container restarted) starts again rather than showing a
// negative rate.
function rates(samples) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const [a, b] = [samples[i - 1].c, samples[i].c];
    const dt = samples[i].t - samples[i - 1].t;
    if (dt > 0 && b.net_rx_kib >= a.net_rx_kib && b.net_tx_kib >= a.net_tx_kib) {
      out.push({ t: samples[i].t, rx: ((b.net_rx_kib - a.net_rx_kib) * 1024) / dt, tx: ((b.net_tx_kib - a.net_tx_kib) * 1024) / dt });
    }
  }
  return out;
}

const perSecond = (v) => `${bytes(Math.round(v))}/s`;

function serviceRow(name, samples) {
  const last = samples[samples.length - 1].c;
  const series = (fn) => samples.map((s) => ({ t: s.t, v: fn(s.c) }));
  const net = rates(samples);
  const netNow = net.length ? net[net.length - 1] : null;
  return h('div', { class: 'service-charts', 'data-service': name },
    h('h3', {}, name),
    h('div', { class: 'charts' },
      chartCard('CPU', cpu(last.cpu_permille),
        lineChart({ label: `${name} CPU`, points: series((c) => c.cpu_permille / 10), minSpan: 5, fmt: (v) => `${Math.round(v)} %` }),
        { 'data-chart': 'cpu' }),
      chartCard('Memory', kib(last.mem_kib),
        lineChart({ label: `${name} memory`, points: series((c) => c.mem_kib * 1024), minSpan: 1 << 20, fmt: bytes }),
        { 'data-chart': 'memory' }),
      chartCard('Restarts', String(last.restarts),
        lineChart({ label: `${name} restarts`, points: series((c) => c.restarts), minSpan: 2, fmt: (v) => String(Math.round(v)) }),
        { 'data-chart': 'restarts' }),
      chartCard('Network', netNow ? `↓${perSecond(netNow.rx)} ↑${perSecond(netNow.tx)}` : '—',
        lineChart({ label: `${name} network in + out`, points: net.map((p) => ({ t: p.t, v: p.rx + p.tx })), minSpan: 1024, fmt: perSecond }),
        { 'data-chart': 'network' })));
}

export function serviceCharts(points) {
  const series = byService(points);
  const rows = [...series.entries()].map(([name, samples]) => serviceRow(name, samples));
  return h('section', { id: 'service-charts' }, h('h2', {}, 'Services over time'),
    rows.length ? rows : h('p', { class: 'muted' }, 'No container samples yet.'));
}
