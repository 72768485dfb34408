// Apps and rollouts: start a rollout of a compose file to the devices a selector picks, in
// waves; watch waves and devices advance; pause, resume, abort, roll back.
// Shapes: `RolloutRecord` and `DeviceProgress` of the controller's rollouts API.

import { api } from './api.js';
import { h, mount, badge, errorBox, toast } from './dom.js';
import { ago, words } from './format.js';
import { onFleetEvent } from './app.js';

const PHASE_CLASS = { running: 'updating', paused: 'rolled_back', completed: 'healthy', aborted: 'new', rolled_back: 'unhealthy' };
const DEVICE_CLASS = { not_started: 'new', deploying: 'updating', healthy: 'healthy', failed: 'unhealthy', rolled_back: 'rolled_back' };

function selectorText(selector) {
  if (typeof selector === 'string') return selector;
  if (selector && selector.tag) return `${selector.tag.key}=${selector.tag.value}`;
  if (selector && selector.devices) return selector.devices.join(', ');
  return '—';
}

// The devices list is in wave order; waves are cumulative counts or percentages of all
// targeted devices (as the controller's engine computes them: rounded up, at least one).
function waveEnds(spec, total) {
  let last = 0;
  return String(spec).split(',').map((item) => {
    const text = item.trim();
    const end = text.endsWith('%')
      ? Math.max(1, Math.ceil((total * Number(text.slice(0, -1))) / 100))
      : Number(text);
    last = Math.min(Math.max(end, last), total);
    return last;
  });
}

function counts(rollout) {
  const by = {};
  for (const d of rollout.devices || []) by[d.status] = (by[d.status] || 0) + 1;
  return { total: (rollout.devices || []).length, by };
}

function progressBar(rollout) {
  const { total, by } = counts(rollout);
  const healthy = by.healthy || 0;
  const failed = (by.failed || 0) + (by.rolled_back || 0);
  const pct = (n) => (total ? (100 * n) / total : 0);
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 100 8');
  svg.setAttribute('preserveAspectRatio', 'none');
  const rect = (x, w, cls) => {
    const r = document.createElementNS(svg.namespaceURI, 'rect');
    for (const [k, v] of Object.entries({ x, width: w, height: 8, class: cls })) r.setAttribute(k, v);
    return r;
  };
  svg.append(rect(0, 100, 'bg'), rect(0, pct(healthy), 'ok'), rect(pct(healthy), pct(failed), 'fail'));
  return h('div', { class: 'progress-wrap' }, h('div', { class: 'progress' }, svg),
    h('span', { class: 'muted small progress-text' }, `${healthy}/${total} healthy${failed ? `, ${failed} failed` : ''}`));
}

function phaseBadge(rollout) {
  return badge(PHASE_CLASS[rollout.phase] || 'new', words(rollout.phase));
}

function startForm(onStarted) {
  const compose = h('textarea', { id: 'compose', rows: 9, spellcheck: 'false', required: true, placeholder: 'services:\n  web:\n    image: hello:1\n' });
  const file = h('input', { type: 'file', id: 'compose-file', accept: '.yml,.yaml,text/yaml', 'aria-label': 'Upload a compose file' });
  file.addEventListener('change', async () => { if (file.files[0]) compose.value = await file.files[0].text(); });
  const app = h('input', { id: 'app-name', placeholder: 'named after its services' });
  const selector = h('input', { id: 'selector', required: true, placeholder: 'site=berlin  or  pi-1, pi-2' });
  const waves = h('input', { id: 'waves', value: '1,50%,100%', required: true });
  const maxFailures = h('input', { id: 'max-failures', value: '0' });
  const window = h('input', { id: 'health-window', type: 'number', min: 0, value: 30 });
  const autoRollback = h('input', { id: 'rollback-on-failure', type: 'checkbox' });
  const message = h('div');
  const button = h('button', { type: 'submit', id: 'start-rollout' }, 'Start rollout');
  const field = (label, input, hint) => h('label', { class: 'field' }, h('span', {}, label), input, hint ? h('small', { class: 'muted' }, hint) : null);

  async function submit(event) {
    event.preventDefault();
    mount(message);
    button.disabled = true;
    const sel = selector.value.trim();
    const failures = maxFailures.value.trim();
    const body = {
      compose: compose.value,
      selector: sel.includes('=') ? sel : sel.split(',').map((s) => s.trim()).filter(Boolean),
      waves: waves.value.trim(),
      max_failures: failures.endsWith('%') ? failures : Number(failures || 0),
      health_window_s: Number(window.value || 0),
    };
    if (app.value.trim()) body.app = app.value.trim();
    if (autoRollback.checked) body.rollback_on_failure = true;
    try {
      const started = await api.post('/rollouts', body);
      toast(`Rollout #${started.id} started`);
      onStarted(started);
    } catch (err) {
      mount(message, errorBox(err));
    } finally {
      button.disabled = false;
    }
  }

  return h('form', { class: 'card form', id: 'rollout-form', onsubmit: submit },
    h('h2', {}, 'New rollout'),
    field('Compose file', compose, 'Paste it, or upload it below. Images are pinned to their digests when the rollout starts.'),
    h('div', { class: 'row' }, file),
    h('div', { class: 'grid2' },
      field('Devices', selector, 'A tag (key=value) or device names separated by commas.'),
      field('App name', app),
      field('Waves', waves, 'Cumulative: 1 device, then half, then all.'),
      field('Max failures', maxFailures, 'A count or a percentage (5%); more pauses the rollout.'),
      field('Health window (s)', window, 'How long devices must stay healthy before the next wave.')),
    h('label', { class: 'check' }, autoRollback, ' Roll the failing wave back at once when failures pause the rollout'),
    message,
    h('div', { class: 'row' }, button));
}

function rolloutRow(r) {
  return h('tr', { 'data-rollout': r.id },
    h('td', { 'data-label': 'Rollout', class: 'name' }, h('a', { href: `#/rollouts/${r.id}` }, `#${r.id} ${r.app}`)),
    h('td', { 'data-label': 'State' }, phaseBadge(r)),
    h('td', { 'data-label': 'Devices' }, selectorText(r.selector)),
    h('td', { 'data-label': 'Waves' }, `${r.waves} · wave ${Math.min(r.wave + 1, waveEnds(r.waves, r.devices.length).length)} of ${waveEnds(r.waves, r.devices.length).length}`),
    h('td', { 'data-label': 'Progress' }, progressBar(r)),
    h('td', { 'data-label': 'Started' }, ago(r.created_unix)));
}

function noApi(view, err) {
  mount(view, h('div', { class: 'page-head' }, h('h1', {}, 'Apps and rollouts')),
    h('div', { class: 'card' }, h('p', {}, err.status === 404
      ? 'This controller has no rollouts API yet. Deploy to one device with `coracle deploy` meanwhile.'
      : err.message)));
}

export async function rolloutsPage(view) {
  let list;
  try { list = await api.get('/rollouts'); } catch (err) { if (err.status === 404) { noApi(view, err); return null; } throw err; }
  const rows = h('tbody', { id: 'rollout-rows' });
  const render = () => mount(rows, list.length
    ? [...list].sort((a, b) => b.id - a.id).map(rolloutRow)
    : h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No rollouts yet.')));
  // The rollouts first: watching them is what an operator does most here.
  mount(view,
    h('div', { class: 'page-head' }, h('h1', {}, 'Apps and rollouts')),
    h('section', {}, h('div', { class: 'card flush' },
      h('table', { class: 'responsive' }, h('thead', {}, h('tr', {}, ['Rollout', 'State', 'Devices', 'Waves', 'Progress', 'Started'].map((t) => h('th', {}, t)))), rows))),
    startForm((r) => { location.hash = `#/rollouts/${r.id}`; }));
  render();
  // Rollout changes arrive on the live stream; the slow poll keeps "started … ago" fresh.
  let timer = null;
  const refresh = async () => { timer = null; try { list = await api.get('/rollouts'); render(); } catch (_) { /* shown next time */ } };
  onFleetEvent((event) => { if (event.kind === 'rollout' && !timer) timer = setTimeout(refresh, 300); });
  const poll = setInterval(refresh, 10000);
  return () => { clearInterval(poll); clearTimeout(timer); };
}

function deviceRow(d, windowS) {
  const since = d.healthy_since_unix ? `healthy since ${ago(d.healthy_since_unix)}` : null;
  const detail = d.reason
    ?? (since && d.status === 'deploying' ? `${since}, needs ${windowS} s` : since)
    ?? (d.deployed_unix ? `deployed ${ago(d.deployed_unix)}` : '');
  return h('tr', { 'data-device': d.device },
    h('td', { 'data-label': 'Device', class: 'name' }, h('a', { href: `#/device/${d.device}` }, d.device)),
    h('td', { 'data-label': 'Progress' }, badge(DEVICE_CLASS[d.status] || 'new', words(d.status))),
    h('td', { 'data-label': 'Generation' }, d.generation ? `${d.previous_generation ?? 0} → ${d.generation}` : '—'),
    h('td', { 'data-label': 'Detail', class: d.reason ? 'reason-cell' : '' }, detail || '—'));
}

export async function rolloutPage(view, id) {
  const body = h('div');
  async function act(action) {
    const label = { pause: 'Pause', resume: 'Resume', abort: 'Abort', rollback: 'Roll back' }[action];
    if (['abort', 'rollback'].includes(action) && !confirm(`${label} rollout #${id}?`)) return;
    try {
      await api.post(`/rollouts/${id}/${action}`);
      toast(`Rollout #${id}: ${label.toLowerCase()} done`);
      await load();
    } catch (err) {
      toast(`${label} failed: ${err.message}`, 'bad');
    }
  }
  async function load() {
    const r = await api.get(`/rollouts/${id}`);
    const ends = waveEnds(r.waves, r.devices.length);
    const active = ['running', 'paused'].includes(r.phase);
    const can = { pause: r.phase === 'running', resume: r.phase === 'paused', abort: active, rollback: r.phase !== 'rolled_back' };
    let start = 0;
    const waves = ends.map((end, i) => {
      const devices = r.devices.slice(start, end);
      start = end;
      const state = i < r.wave || (i === r.wave && r.phase === 'completed') ? 'done'
        : i === r.wave ? (r.phase === 'running' ? 'in progress' : words(r.phase))
          : active ? 'waiting' : 'not reached';
      return { i, devices, state };
    }).filter((w) => w.devices.length);
    mount(body,
      h('div', { class: 'page-head' }, h('a', { href: '#/rollouts', class: 'back' }, '← Rollouts'),
        h('h1', {}, `Rollout #${r.id}: ${r.app}`), h('span', { id: 'rollout-phase' }, phaseBadge(r))),
      h('div', { class: 'card' },
        progressBar(r),
        r.reason ? h('p', { class: 'reason', id: 'rollout-reason' }, r.reason) : null,
        h('p', { class: 'muted' }, `Devices ${selectorText(r.selector)} · waves ${r.waves} · max failures ${r.max_failures} · health window ${r.health_window_s} s${r.rollback_on_failure ? ' · automatic rollback' : ''} · started ${ago(r.created_unix)}`),
        h('div', { class: 'row', id: 'rollout-actions' },
          ['pause', 'resume', 'abort', 'rollback'].map((a) => h('button', {
            type: 'button', class: a === 'abort' || a === 'rollback' ? 'ghost danger' : 'ghost', id: `rollout-${a}`, disabled: !can[a], onclick: () => act(a),
          }, { pause: 'Pause', resume: 'Resume', abort: 'Abort', rollback: 'Roll back' }[a])))),
      waves.map((w) => h('section', { class: 'wave', 'data-wave': w.i },
        h('h2', {}, `Wave ${w.i + 1} `, h('span', { class: 'muted small' }, `${w.devices.length} device${w.devices.length === 1 ? '' : 's'} · ${w.state}`)),
        h('div', { class: 'card flush' }, h('table', { class: 'responsive' },
          h('thead', {}, h('tr', {}, ['Device', 'Progress', 'Generation', 'Detail'].map((t) => h('th', {}, t)))),
          h('tbody', {}, w.devices.map((d) => deviceRow(d, r.health_window_s))))))));
  }
  try { await load(); } catch (err) { if (err.status === 404) { mount(view, errorBox(new Error(`There is no rollout #${id}.`))); return null; } throw err; }
  mount(view, body);
  let timer = null;
  onFleetEvent((event) => {
    const mine = event.kind === 'rollout' ? String(event.rollout) === String(id) : event.kind !== 'health';
    if (mine && !timer) timer = setTimeout(() => { timer = null; load().catch(() => {}); }, 300);
  });
  const poll = setInterval(() => load().catch(() => {}), 10000);
  return () => { clearInterval(poll); clearTimeout(timer); };
}
