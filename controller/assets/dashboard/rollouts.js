// Apps and rollouts: start a rollout of a compose file to the devices a tag selector picks,
// in waves; watch waves and devices advance; pause, resume, abort, roll back.

import { api } from './api.js';
import { h, mount, badge, errorBox, toast } from './dom.js';
import { ago, words } from './format.js';
import { onFleetEvent } from './app.js';

// A Rust enum as JSON ("Completed" or {"Running": {"wave": 1}}) or a plain string.
function phaseOf(rollout) {
  const p = rollout.phase ?? rollout.state ?? rollout.status ?? 'unknown';
  if (typeof p === 'string') return [p.toLowerCase(), {}];
  const [name, body] = Object.entries(p)[0] || ['unknown', {}];
  return [name.toLowerCase(), body || {}];
}

const PHASE_CLASS = { running: 'updating', paused: 'rolled_back', completed: 'healthy', aborted: 'new', rolledback: 'unhealthy', rolled_back: 'unhealthy', failed: 'unhealthy' };

function phaseBadge(rollout) {
  const [name] = phaseOf(rollout);
  return badge(PHASE_CLASS[name] || 'new', words(name === 'rolledback' ? 'rolled_back' : name));
}

function devicesOf(rollout) {
  return rollout.devices || rollout.targets || [];
}

function deviceState(d) {
  const s = d.state ?? d.status ?? d.health ?? 'pending';
  if (typeof s === 'string') return s;
  return Object.keys(s)[0] || 'pending';
}

const DEVICE_CLASS = { pending: 'new', waiting: 'new', updating: 'updating', applying: 'updating', verifying: 'updating', healthy: 'healthy', done: 'healthy', failed: 'unhealthy', rolledback: 'unhealthy', rolled_back: 'unhealthy' };

function counts(rollout) {
  const devices = devicesOf(rollout);
  const by = {};
  for (const d of devices) { const s = deviceState(d).toLowerCase(); by[s] = (by[s] || 0) + 1; }
  return { total: devices.length, by };
}

function progressBar(rollout) {
  const { total, by } = counts(rollout);
  const healthy = (by.healthy || 0) + (by.done || 0);
  const failed = (by.failed || 0) + (by.rolledback || 0) + (by.rolled_back || 0);
  const pct = (n) => (total ? (100 * n) / total : 0);
  const bar = h('div', { class: 'progress', title: `${healthy} healthy, ${failed} failed of ${total}` });
  const ok = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  ok.setAttribute('viewBox', '0 0 100 8');
  ok.setAttribute('preserveAspectRatio', 'none');
  const rect = (x, w, cls) => { const r = document.createElementNS(ok.namespaceURI, 'rect'); r.setAttribute('x', x); r.setAttribute('width', w); r.setAttribute('height', 8); r.setAttribute('class', cls); return r; };
  ok.append(rect(0, 100, 'bg'), rect(0, pct(healthy), 'ok'), rect(pct(healthy), pct(failed), 'fail'));
  bar.append(ok);
  return h('div', { class: 'progress-wrap' }, bar, h('span', { class: 'muted small' }, `${healthy}/${total} healthy${failed ? `, ${failed} failed` : ''}`));
}

function startForm(onStarted) {
  const compose = h('textarea', { id: 'compose', rows: 10, spellcheck: 'false', placeholder: 'services:\n  web:\n    image: hello:1\n' });
  const file = h('input', { type: 'file', id: 'compose-file', accept: '.yml,.yaml,text/yaml', 'aria-label': 'Upload a compose file' });
  file.addEventListener('change', async () => { if (file.files[0]) compose.value = await file.files[0].text(); });
  const selector = h('input', { id: 'selector', placeholder: 'site=berlin (empty: every device)' });
  const waves = h('input', { id: 'waves', value: '1,50%,100%' });
  const maxFailures = h('input', { id: 'max-failures', type: 'number', min: 0, value: 0 });
  const window = h('input', { id: 'health-window', type: 'number', min: 0, value: 60 });
  const message = h('div');
  const button = h('button', { type: 'submit', id: 'start-rollout' }, 'Start rollout');
  const field = (label, input, hint) => h('label', { class: 'field' }, h('span', {}, label), input, hint ? h('small', { class: 'muted' }, hint) : null);
  return h('form', {
    class: 'card form', id: 'rollout-form',
    onsubmit: async (event) => {
      event.preventDefault();
      mount(message);
      button.disabled = true;
      const sel = selector.value.trim();
      const body = {
        compose: compose.value,
        selector: sel.includes(',') && !sel.includes('=') ? sel.split(',').map((s) => s.trim()) : sel,
        waves: waves.value.trim(),
        max_failures: Number(maxFailures.value),
        health_window_s: Number(window.value),
      };
      try {
        const started = await api.post('/rollouts', body);
        toast('Rollout started');
        onStarted(started);
      } catch (err) {
        mount(message, errorBox(err));
      } finally {
        button.disabled = false;
      }
    },
  },
  h('h2', {}, 'New rollout'),
  field('Compose file', compose),
  h('div', { class: 'row' }, file),
  h('div', { class: 'grid2' },
    field('Devices', selector, 'A tag selector (key=value) or device names separated by commas.'),
    field('Waves', waves, 'Cumulative: 1 device, then 50 %, then all.'),
    field('Max failures', maxFailures, 'The rollout pauses when more devices fail.'),
    field('Health window (s)', window, 'How long a wave must stay healthy to advance.')),
  message,
  h('div', { class: 'row' }, button));
}

function rolloutRow(r) {
  const { total } = counts(r);
  return h('tr', { 'data-rollout': r.id },
    h('td', { 'data-label': 'Rollout', class: 'name' }, h('a', { href: `#/rollouts/${r.id}` }, `#${r.id}`)),
    h('td', { 'data-label': 'State' }, phaseBadge(r)),
    h('td', { 'data-label': 'Devices' }, typeof r.selector === 'string' ? (r.selector || 'all devices') : JSON.stringify(r.selector ?? '')),
    h('td', { 'data-label': 'Waves' }, String(r.waves_spec ?? (typeof r.waves === 'string' ? r.waves : (r.waves || []).length + ' waves'))),
    h('td', { 'data-label': 'Progress' }, total ? progressBar(r) : '—'),
    h('td', { 'data-label': 'Started' }, ago(r.created_unix ?? r.started_unix)));
}

function noApi(view, err) {
  mount(view, h('div', { class: 'page-head' }, h('h1', {}, 'Rollouts')),
    h('div', { class: 'card' }, h('p', {}, err.status === 404
      ? 'This controller has no rollouts API yet (it is being built). Deploy to one device with `coracle deploy` meanwhile.'
      : err.message)));
}

export async function rolloutsPage(view) {
  let list;
  try { list = await api.get('/rollouts'); } catch (err) { if (err.status === 404) { noApi(view, err); return null; } throw err; }
  const rows = h('tbody', { id: 'rollout-rows' });
  const render = () => mount(rows, list.length ? list.map(rolloutRow) : h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No rollouts yet.')));
  mount(view,
    h('div', { class: 'page-head' }, h('h1', {}, 'Apps and rollouts')),
    startForm((r) => { location.hash = `#/rollouts/${r.id ?? (r.rollout && r.rollout.id)}`; }),
    h('section', {}, h('h2', {}, 'Rollouts'), h('div', { class: 'card flush' },
      h('table', { class: 'responsive' }, h('thead', {}, h('tr', {}, ['Rollout', 'State', 'Devices', 'Waves', 'Progress', 'Started'].map((t) => h('th', {}, t)))), rows))));
  render();
  const poll = setInterval(async () => { try { list = await api.get('/rollouts'); render(); } catch (_) { /* shown next time */ } }, 3000);
  return () => clearInterval(poll);
}

export async function rolloutPage(view, id) {
  const body = h('div');
  async function act(action) {
    if (['abort', 'rollback'].includes(action) && !confirm(`${action === 'abort' ? 'Abort' : 'Roll back'} rollout #${id}?`)) return;
    try {
      await api.post(`/rollouts/${id}/${action}`);
      toast(`Rollout #${id}: ${action} done`);
      await load();
    } catch (err) {
      toast(`${action} failed: ${err.message}`, 'bad');
    }
  }
  async function load() {
    const r = await api.get(`/rollouts/${id}`);
    const [phase, detail] = phaseOf(r);
    const devices = devicesOf(r);
    const waveOf = (d) => d.wave ?? 0;
    const waves = [...new Set(devices.map(waveOf))].sort((a, b) => a - b);
    const can = {
      pause: phase === 'running', resume: phase === 'paused',
      abort: phase === 'running' || phase === 'paused', rollback: phase !== 'rolledback' && phase !== 'rolled_back',
    };
    mount(body,
      h('div', { class: 'page-head' }, h('a', { href: '#/rollouts', class: 'back' }, '← Rollouts'),
        h('h1', {}, `Rollout #${r.id ?? id}`), phaseBadge(r)),
      h('div', { class: 'card' },
        progressBar(r),
        r.reason || detail.reason ? h('p', { class: 'reason' }, r.reason || detail.reason) : null,
        h('p', { class: 'muted' }, `Devices: ${typeof r.selector === 'string' ? r.selector || 'all' : JSON.stringify(r.selector)} · waves ${r.waves_spec ?? (typeof r.waves === 'string' ? r.waves : '')} · max failures ${r.max_failures ?? '—'} · health window ${r.health_window_s ?? '—'} s`),
        h('div', { class: 'row actions', id: 'rollout-actions' },
          ['pause', 'resume', 'abort', 'rollback'].map((a) => h('button', {
            type: 'button', class: a === 'abort' || a === 'rollback' ? 'ghost danger' : 'ghost', id: `rollout-${a}`, disabled: !can[a], onclick: () => act(a),
          }, a === 'rollback' ? 'Roll back' : a[0].toUpperCase() + a.slice(1))))),
      waves.map((w) => h('section', { class: 'wave', 'data-wave': w },
        h('h2', {}, `Wave ${w + 1}`),
        h('div', { class: 'card flush' }, h('table', { class: 'responsive' },
          h('thead', {}, h('tr', {}, ['Device', 'Progress', 'Generation', 'Detail'].map((t) => h('th', {}, t)))),
          h('tbody', {}, devices.filter((d) => waveOf(d) === w).map((d) => {
            const s = deviceState(d);
            return h('tr', { 'data-device': d.device ?? d.id },
              h('td', { 'data-label': 'Device', class: 'name' }, h('a', { href: `#/device/${d.device ?? d.id}` }, d.device ?? d.id)),
              h('td', { 'data-label': 'Progress' }, badge(DEVICE_CLASS[s.toLowerCase()] || 'new', words(s))),
              h('td', { 'data-label': 'Generation' }, String(d.generation ?? d.applied_generation ?? '—')),
              h('td', { 'data-label': 'Detail' }, d.reason ?? d.detail ?? ''));
          })))))));
  }
  try { await load(); } catch (err) { if (err.status === 404) { mount(view, errorBox(new Error(`There is no rollout #${id}.`))); return null; } throw err; }
  mount(view, body);
  let timer = null;
  onFleetEvent(() => { if (!timer) timer = setTimeout(() => { timer = null; load().catch(() => {}); }, 500); });
  const poll = setInterval(() => load().catch(() => {}), 3000);
  return () => { clearInterval(poll); clearTimeout(timer); };
}
