// One device: its services (state, restarts, last exit, OOM, health) with logs and restart,
// charts of its vitals from the health history, and its events.

import { api } from './api.js';
import { h, mount, badge, errorBox, toast } from './dom.js';
import { ago, bytes, clock, cpu, duration, kib, mib, temp, words, shortDigest } from './format.js';
import { lineChart, chartCard as card } from './chart.js';
import { serviceCharts } from './service_charts.js';
import { deviceActions } from './device_actions.js';
import { onFleetEvent } from './app.js';
import { openTerminal, followLogs } from './remote.js';

function variant(value) {
  // serde's external tagging: "Idle" or {"Applying": {...}}
  if (typeof value === 'string') return [value, {}];
  const [name, body] = Object.entries(value || {})[0] || ['Unknown', {}];
  return [name, body || {}];
}

function updateText(update) {
  const [name, body] = variant(update);
  switch (name) {
    case 'Idle': return 'up to date';
    case 'Applying': return `applying generation ${body.generation}`;
    case 'Verifying': return `verifying generation ${body.generation} (health gate)`;
    case 'RolledBack': return `rolled back generation ${body.generation}: ${body.reason}`;
    case 'Failed': return `generation ${body.generation} failed: ${body.reason}`;
    default: return words(name);
  }
}

export function describeEvent(kind) {
  const [name, b] = variant(kind);
  switch (name) {
    case 'ContainerExited': return `${b.service} exited with code ${b.exit_code}${b.oom_killed ? ' (out of memory)' : ''}`;
    case 'ContainerRestarted': return `${b.service} restarted (${b.restart_count} restart${b.restart_count === 1 ? '' : 's'} so far)`;
    case 'HealthChanged': return `${b.service} is now ${words(b.health)}`;
    case 'PullProgress': return `pulling ${shortDigest(b.image)}: ${bytes(b.done_bytes)} of ${bytes(b.total_bytes)}${b.delta ? ' (delta)' : ''}`;
    case 'PullFailed': return `pull of ${shortDigest(b.image)} failed: ${b.reason}`;
    case 'Applied': return `generation ${b.generation} applied`;
    case 'RolledBack': return `generation ${b.generation} rolled back (${b.service}): ${b.reason}`;
    case 'Rejected': return `refused input (${words(b.reason)}): ${b.detail}`;
    default: return words(name);
  }
}

// The layer the device is pulling: a bar (same look as a rollout's) and bytes of total.
function pullProgress(p) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 100 8');
  svg.setAttribute('preserveAspectRatio', 'none');
  for (const [width, cls] of [[100, 'bg'], [p.percent, 'ok']]) {
    const r = document.createElementNS(svg.namespaceURI, 'rect');
    for (const [k, v] of Object.entries({ x: 0, width, height: 8, class: cls })) r.setAttribute(k, v);
    svg.append(r);
  }
  const what = `${p.service} layer ${p.layer + 1}/${p.layers}${p.delta ? ' (delta)' : ''}`;
  const amount = p.stored ? `${bytes(p.total_bytes)} stored` : `${bytes(p.done_bytes)} of ${bytes(p.total_bytes)} (${p.percent} %)`;
  return h('div', { class: 'progress-wrap', id: 'pull-progress', 'data-percent': p.percent },
    h('div', { class: 'progress' }, svg),
    h('span', { class: 'muted small progress-text' }, `generation ${p.generation}: ${what}, ${amount}`));
}

const EVENT_CLASS = { ContainerExited: 'warn', PullFailed: 'bad', RolledBack: 'bad', Rejected: 'bad', Applied: 'good' };

function healthBadge(health) {
  const cls = { Healthy: 'healthy', Unhealthy: 'unhealthy', Starting: 'updating', None: 'new' }[health] || 'new';
  return badge(cls, health === 'None' ? 'no check' : words(health));
}

function stateBadge(state) {
  const cls = { Running: 'healthy', Created: 'updating', Pending: 'updating', Pulling: 'updating', Restarting: 'unhealthy', Exited: 'unhealthy', Stopped: 'new' }[state] || 'new';
  return badge(cls, words(state));
}

function charts(points) {
  const series = (fn) => points.map((p) => ({ t: p.bucket_unix, v: fn(p.sample) }));
  const last = points.length ? points[points.length - 1].sample : null;
  const memPct = (s) => (s.mem_total_kib ? (100 * s.mem_used_kib) / s.mem_total_kib : 0);
  const diskPct = (s) => (s.disk_total_mib ? (100 * (s.disk_total_mib - s.disk_free_mib)) / s.disk_total_mib : 0);
  const withTemp = points.filter((p) => p.sample.temp_decicelsius !== null && p.sample.temp_decicelsius !== undefined);
  return h('div', { class: 'charts', id: 'charts' },
    card('CPU', last ? cpu(last.cpu_permille) : '—',
      lineChart({ label: 'CPU', points: series((s) => s.cpu_permille / 10), minSpan: 20, fmt: (v) => `${Math.round(v)} %` })),
    card('Memory', last ? `${kib(last.mem_used_kib)} of ${kib(last.mem_total_kib)}` : '—',
      lineChart({ label: 'Memory', points: series(memPct), max: 100, fmt: (v) => `${Math.round(v)} %` })),
    card('Disk', last ? `${mib(last.disk_total_mib - last.disk_free_mib)} of ${mib(last.disk_total_mib)}` : '—',
      lineChart({ label: 'Disk', points: series(diskPct), max: 100, fmt: (v) => `${Math.round(v)} %` })),
    card('Temperature', last ? temp(last.temp_decicelsius) : '—',
      lineChart({ label: 'Temperature', points: withTemp.map((p) => ({ t: p.bucket_unix, v: p.sample.temp_decicelsius / 10 })), min: null, minSpan: 10, fmt: (v) => `${v.toFixed(0)} °C` })));
}

export async function devicePage(view, id) {
  const logsPanel = h('div', { class: 'card logs', id: 'logs', hidden: true });
  // Terminal and followed logs (remote.js).
  const remotePanel = h('div', { class: 'card logs', id: 'remote', hidden: true });
  let endRemote = () => {};
  const remote = (open, service) => { endRemote(); endRemote = open(remotePanel, id, service); };

  async function showLogs(service, lines = 100) {
    logsPanel.hidden = false;
    const pick = h('select', { 'aria-label': 'Lines', onchange: () => showLogs(service, Number(pick.value)) },
      [50, 100, 500].map((n) => h('option', { value: n, selected: n === lines }, `last ${n} lines`)));
    const head = h('div', { class: 'logs-head' }, h('h2', {}, `Logs of ${service}`), pick,
      h('button', { class: 'ghost', type: 'button', onclick: () => showLogs(service, Number(pick.value)) }, 'Refresh'),
      h('button', { class: 'ghost', type: 'button', onclick: () => { logsPanel.hidden = true; } }, 'Close'));
    mount(logsPanel, head, h('p', { class: 'muted' }, `Asking ${id} for the last ${lines} lines…`));
    logsPanel.scrollIntoView({ block: 'nearest' });
    try {
      const reply = await api.get(`/devices/${id}/services/${encodeURIComponent(service)}/logs?lines=${lines}`);
      const text = reply.lines.length ? reply.lines.join('\n') : '(the log is empty)';
      mount(logsPanel, head,
        h('p', { class: 'muted' }, `${reply.lines.length} lines from the device, fetched ${new Date().toLocaleTimeString()}` +
          (reply.truncated ? ' — cut to the device\'s size limit' : '')),
        h('pre', { class: 'log-lines', id: 'log-lines' }, text));
    } catch (err) {
      mount(logsPanel, head, errorBox(err));
    }
  }

  async function restart(service, button) {
    if (!confirm(`Restart ${service} on ${id}?`)) return;
    button.disabled = true;
    button.textContent = 'Restarting…';
    try {
      await api.post(`/devices/${id}/services/${encodeURIComponent(service)}/restart`);
      toast(`${service} restarted on ${id}`);
      await load();
    } catch (err) {
      toast(`Restart failed: ${err.message}`, 'bad');
    } finally {
      button.disabled = false;
      button.textContent = 'Restart';
    }
  }

  function servicesTable(detail) {
    const services = detail.reported ? detail.reported.services : [];
    if (!services.length) return h('p', { class: 'muted' }, 'No services reported. Deploy an app or start a rollout.');
    return h('table', { class: 'services responsive', id: 'services' },
      h('thead', {}, h('tr', {}, ['Service', 'State', 'Health', 'Restarts', 'Last exit', 'OOM', 'Image', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, services.map((s) => h('tr', { 'data-service': s.name },
        h('td', { 'data-label': 'Service', class: 'name' }, s.name),
        h('td', { 'data-label': 'State' }, stateBadge(s.state)),
        h('td', { 'data-label': 'Health' }, healthBadge(s.health)),
        h('td', { 'data-label': 'Restarts', class: 'restarts' }, String(s.restart_count)),
        h('td', { 'data-label': 'Last exit' }, s.last_exit_code === null ? '—' : String(s.last_exit_code)),
        h('td', { 'data-label': 'OOM' }, s.oom_killed ? badge('unhealthy', 'OOM killed') : 'no'),
        h('td', { 'data-label': 'Image', class: 'mono', title: s.image }, shortDigest(s.image)),
        h('td', { class: 'actions' },
          h('button', { type: 'button', class: 'ghost', onclick: () => showLogs(s.name) }, 'Logs'),
          h('button', { type: 'button', class: 'ghost', 'data-action': 'follow', onclick: () => remote(followLogs, s.name) }, 'Follow'),
          h('button', { type: 'button', class: 'ghost', 'data-action': 'terminal', disabled: !detail.device.online, onclick: () => remote(openTerminal, s.name) }, 'Terminal'),
          h('button', { type: 'button', class: 'ghost danger', disabled: !detail.device.online, title: detail.device.online ? null : 'The device is offline', onclick: (e) => restart(s.name, e.currentTarget) }, 'Restart'))))));
  }

  function eventsList(events) {
    if (!events.length) return h('p', { class: 'muted' }, 'No events yet.');
    return h('ul', { class: 'events', id: 'events' }, events.map((e) => {
      const [name] = variant(e.event.kind);
      return h('li', { class: EVENT_CLASS[name] || '' },
        h('span', { class: 'when', title: clock(e.event.at_unix_s) }, ago(e.event.at_unix_s)),
        h('span', {}, describeEvent(e.event.kind)));
    }));
  }

  const body = h('div');
  let actions = null;
  async function load() {
    const [detail, health, events] = await Promise.all([
      api.get(`/devices/${id}`), api.get(`/devices/${id}/health`), api.get(`/devices/${id}/events?limit=50`),
    ]);
    const d = detail.device;
    const r = detail.reported;
    // Kept across refreshes so an open form is not wiped by a health sample.
    actions ??= deviceActions(id, d.tags, () => load().catch(() => {}));
    const last = health.length ? health[health.length - 1].sample : null;
    const facts = [
      ['Presence', h('span', { class: `presence ${d.online ? 'on' : 'off'}` }, d.online ? 'online' : 'offline')],
      ['Last seen', ago(d.last_seen_unix)],
      ['Generation', `applied ${d.applied_generation ?? 0}, desired ${d.desired_generation ?? 'none'}`],
      ['Update', r ? updateText(r.update) : 'never reported'],
      ...(detail.pull_progress ? [['Pull', pullProgress(detail.pull_progress)]] : []),
      ['Uptime', last ? duration(last.uptime_s) : '—'],
      ['Load', last ? (last.load1_centi / 100).toFixed(2) : '—'],
      ['Agent', r ? r.agent_version : '—'],
      ['Tags', Object.keys(d.tags).length ? Object.entries(d.tags).map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`)) : '—'],
    ];
    const conditions = r && r.conditions.length ? h('div', { class: 'error' }, r.conditions.map((c) => {
      const [name, b] = variant(c);
      return h('div', {}, `${words(name)} ${Object.entries(b).map(([k, v]) => `${words(k)} ${v}`).join(', ')}`);
    })) : null;
    mount(body,
      h('div', { class: 'page-head' }, h('a', { href: '#/fleet', class: 'back' }, '← Fleet'), h('h1', {}, d.id)),
      h('dl', { class: 'facts card' }, facts.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))),
      actions,
      conditions,
      h('section', {}, h('h2', {}, 'Services'), h('div', { class: 'card flush' }, servicesTable(detail))),
      logsPanel,
      remotePanel,
      h('section', {}, h('h2', {}, 'Vitals'),
        h('p', { class: 'muted small' }, 'One point per minute, last 24 hours.'), charts(health)),
      serviceCharts(health),
      h('section', {}, h('h2', {}, 'Events'), h('div', { class: 'card' }, eventsList(events))));
  }

  try {
    await load();
  } catch (err) {
    if (err.status === 404) { mount(view, h('a', { href: '#/fleet', class: 'back' }, '← Fleet'), errorBox(new Error(`There is no device called ${id}.`))); return null; }
    throw err;
  }
  mount(view, body);
  let timer = null;
  onFleetEvent((event) => {
    // Progress arrives up to once a second while the device pulls: redraw the bar alone.
    const bar = document.getElementById('pull-progress');
    if (event.kind === 'progress' && event.device === id && bar) {
      bar.replaceWith(pullProgress(event.progress));
      return;
    }
    if ((event.device === id || event.kind === 'lagged') && !timer) {
      timer = setTimeout(() => { timer = null; load().catch(() => {}); }, 300);
    }
  });
  return () => { clearTimeout(timer); endRemote(); };
}
