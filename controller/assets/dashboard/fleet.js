// The fleet table: every device with presence, status, generations, app and vitals;
// filters by tag and state; refreshed from the live stream.

import { api } from './api.js';
import { h, mount, badge, errorBox } from './dom.js';
import { ago, cpu, kib, mib, percent, temp } from './format.js';
import { onFleetEvent } from './app.js';
import { enrolPanel } from './enrol.js';

const STATES = ['all', 'online', 'offline', 'healthy', 'unhealthy', 'updating', 'rolled_back', 'failed', 'idle', 'new'];

function matches(row, state, tag, text) {
  if (state === 'online' && !row.online) return false;
  if (state === 'offline' && row.online) return false;
  if (!['all', 'online', 'offline'].includes(state) && row.status !== state) return false;
  if (tag) {
    const [k, v] = tag.split('=');
    if (row.tags[k] !== v) return false;
  }
  if (text && !row.id.includes(text.toLowerCase())) return false;
  return true;
}

function generation(row) {
  const applied = row.applied_generation ?? 0;
  const desired = row.desired_generation;
  if (desired === null || desired === undefined) return h('span', { class: 'muted' }, 'none');
  if (applied === desired) return h('span', {}, `${applied}`);
  return h('span', { class: 'pending', title: `applied ${applied}, desired ${desired}` }, `${applied} → ${desired}`);
}

function cell(label, ...content) {
  return h('td', { 'data-label': label }, ...content);
}

function vitals(row) {
  const s = row.health;
  if (!s) return [cell('CPU', '—'), cell('Memory', '—'), cell('Disk', '—'), cell('Temp', '—')];
  const diskUsed = s.disk_total_mib - s.disk_free_mib;
  return [
    cell('CPU', cpu(s.cpu_permille)),
    cell('Memory', h('span', { title: `${kib(s.mem_used_kib)} of ${kib(s.mem_total_kib)}` },
      `${kib(s.mem_used_kib)} `, h('span', { class: 'muted' }, `(${percent(s.mem_used_kib, s.mem_total_kib)})`))),
    cell('Disk', h('span', { title: `${mib(s.disk_free_mib)} free of ${mib(s.disk_total_mib)}` },
      `${mib(diskUsed)} `, h('span', { class: 'muted' }, `(${percent(diskUsed, s.disk_total_mib)})`))),
    cell('Temp', temp(s.temp_decicelsius)),
  ];
}

function rowFor(row) {
  const tags = Object.entries(row.tags).map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`));
  return h('tr', { 'data-device': row.id, class: row.online ? '' : 'offline' },
    h('td', { class: 'name', 'data-label': 'Device' },
      h('a', { href: `#/device/${row.id}` }, row.id), h('div', { class: 'tags' }, tags)),
    cell('Presence', h('span', { class: `presence ${row.online ? 'on' : 'off'}` }, row.online ? 'online' : 'offline')),
    cell('Status', badge(row.status), row.reason ? h('div', { class: 'reason' }, row.reason) : null),
    cell('Generation', generation(row)),
    cell('App', row.app.length ? [...new Set(row.app)].join(', ') : h('span', { class: 'muted' }, '—')),
    ...vitals(row),
    cell('Last seen', h('span', { class: 'ago', 'data-unix': row.last_seen_unix ?? '' }, ago(row.last_seen_unix))));
}

export async function fleetPage(view) {
  let rows = await api.get('/fleet');
  const state = h('select', { id: 'filter-state', 'aria-label': 'Filter by state' },
    STATES.map((s) => h('option', { value: s }, s === 'all' ? 'All states' : s.replace('_', ' '))));
  const tag = h('select', { id: 'filter-tag', 'aria-label': 'Filter by tag' });
  const search = h('input', { id: 'filter-text', type: 'search', placeholder: 'Search devices', 'aria-label': 'Search devices' });
  const summary = h('p', { class: 'summary', id: 'fleet-summary' });
  const body = h('tbody', { id: 'fleet-rows' });
  const problem = h('div');

  function fillTags() {
    const current = tag.value;
    const all = new Set(rows.flatMap((r) => Object.entries(r.tags).map(([k, v]) => `${k}=${v}`)));
    mount(tag, h('option', { value: '' }, 'All tags'), [...all].sort().map((t) => h('option', { value: t }, t)));
    tag.value = all.has(current) ? current : '';
  }

  function render() {
    const shown = rows.filter((r) => matches(r, state.value, tag.value, search.value));
    const online = rows.filter((r) => r.online).length;
    const unhealthy = rows.filter((r) => ['unhealthy', 'failed', 'rolled_back'].includes(r.status)).length;
    summary.textContent = `${rows.length} devices · ${online} online · ${unhealthy} need attention` +
      (shown.length !== rows.length ? ` · ${shown.length} shown` : '');
    mount(body, shown.length
      ? shown.map(rowFor)
      : h('tr', {}, h('td', { colspan: 10, class: 'empty' },
        rows.length ? 'No device matches these filters.' : 'No devices yet. Enrol one here or with `coracle device add NAME`.')));
  }

  let timer = null;
  async function refresh() {
    timer = null;
    try {
      rows = await api.get('/fleet');
      mount(problem);
      fillTags();
      render();
    } catch (err) {
      if (err.status !== 401) mount(problem, errorBox(err));
    }
  }
  // At most one refetch a second, however chatty the fleet is.
  onFleetEvent(() => { if (!timer) timer = setTimeout(refresh, 1000); });
  for (const el of [state, tag]) el.addEventListener('change', render);
  search.addEventListener('input', render);

  const enrol = enrolPanel(() => refresh());
  const headers = ['Device', 'Presence', 'Status', 'Generation', 'App', 'CPU', 'Memory', 'Disk', 'Temp', 'Last seen'];
  mount(view,
    h('div', { class: 'page-head' }, h('h1', {}, 'Fleet'), summary, enrol.open),
    enrol.panel,
    h('div', { class: 'filters' }, state, tag, search),
    problem,
    h('div', { class: 'card flush' },
      h('table', { class: 'fleet responsive' }, h('thead', {}, h('tr', {}, headers.map((t) => h('th', {}, t)))), body)));
  fillTags();
  render();
  // Relative times move on without a reload.
  const tick = setInterval(() => {
    for (const el of view.querySelectorAll('.ago')) el.textContent = ago(Number(el.dataset.unix) || null);
  }, 15000);
  return () => { clearInterval(tick); clearTimeout(timer); };
}
