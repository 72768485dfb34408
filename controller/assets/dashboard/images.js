// The registry: repositories, their tags in version order with digests and sizes, and what
// a device holding the previous version downloads: per new layer the delta the registry
// encoded (its size against the full compressed layer), "full layer" when no delta pays, or
// "computing" while the background workers are at it (the page then refetches every 2 s).

import { api } from './api.js';
import { h, mount } from './dom.js';
import { bytes, shortDigest } from './format.js';

const PENDING = ['queued', 'computing'];

function ratio(part, whole) {
  if (!whole) return '';
  const r = (100 * part) / whole;
  return `${r < 1 ? r.toFixed(2) : Math.round(r)}\u00a0%`;
}

// One new layer: the delta's bytes vs the full layer's, or why the full layer is sent.
function layerDelta(d) {
  const full = bytes(d.full_bytes);
  const title = `layer ${shortDigest(d.layer)}`;
  switch (d.state) {
    case 'ready':
      return h('div', { class: 'delta', 'data-state': 'ready', title },
        h('span', { class: 'badge healthy' }, 'delta'), ` ${bytes(d.delta_bytes)} `,
        h('span', { class: 'muted' }, `of ${full} (${ratio(d.delta_bytes, d.full_bytes)})`));
    case 'not_worth_it':
      return h('div', { class: 'delta', 'data-state': d.state, title },
        h('span', { class: 'badge' }, 'full layer'), ` ${full} `,
        h('span', { class: 'muted' }, d.delta_bytes ? `(a delta would be ${bytes(d.delta_bytes)})` : '(no delta pays)'));
    case 'queued':
    case 'computing':
      return h('div', { class: 'delta', 'data-state': d.state, title },
        h('span', { class: 'badge' }, d.state === 'queued' ? 'queued' : 'computing…'), ` full layer ${full}`);
    case 'failed':
      return h('div', { class: 'delta', 'data-state': d.state, title: `${title}: ${d.error}` },
        h('span', { class: 'badge failed' }, 'delta failed'), ` full layer ${full}`);
    default:
      return h('div', { class: 'delta', 'data-state': d.state, title },
        h('span', { class: 'badge' }, 'full layer'), ` ${full}`);
  }
}

function update(tag) {
  if (!tag.previous) return h('span', { class: 'muted' }, 'first version');
  if (!tag.deltas.length) return h('span', { class: 'muted' }, `no new layers vs ${tag.previous}`);
  const total = tag.update_bytes === null || tag.update_bytes === undefined
    ? null
    : h('div', { class: 'muted' }, `from ${tag.previous}: ${bytes(tag.update_bytes)} to download, ${bytes(tag.new_bytes)} of new layers`);
  return h('div', {}, tag.deltas.map(layerDelta), total);
}

// A single-platform image: its layers; an index: each platform's image.
function layersCell(t) {
  if (t.platforms && t.platforms.length) {
    return h('td', { 'data-label': 'Layers', class: 'platforms' },
      t.platforms.map((p) => h('div', { 'data-platform': p.platform, title: p.digest },
        h('span', { class: 'badge' }, p.platform), ' ',
        p.problem ? h('span', { class: 'bad-text' }, p.problem)
          : `${p.layers.length} layer${p.layers.length === 1 ? '' : 's'}, ${bytes(p.size)}`)));
  }
  return h('td', { 'data-label': 'Layers', title: t.layers.map((l) => `${shortDigest(l.digest)} ${bytes(l.size)}`).join('\n') },
    `${t.layers.length} (${t.layers.map((l) => bytes(l.size)).join(', ') || '—'})`);
}

function repository(repo) {
  const total = repo.tags.reduce((sum, t) => sum + t.size, 0);
  return h('section', { class: 'card flush repo', 'data-repo': repo.name },
    h('div', { class: 'repo-head' }, h('h2', {}, repo.name),
      h('span', { class: 'muted' }, `${repo.tags.length} tag${repo.tags.length === 1 ? '' : 's'} · ${bytes(total)} in all`)),
    h('table', { class: 'responsive' },
      h('thead', {}, h('tr', {}, ['Tag', 'Digest', 'Size', 'Layers', 'Update from previous'].map((t) => h('th', {}, t)))),
      h('tbody', {}, repo.tags.map((t) => h('tr', { 'data-tag': t.tag },
        h('td', { 'data-label': 'Tag', class: 'name' }, t.tag),
        h('td', { 'data-label': 'Digest', class: 'mono', title: t.digest }, shortDigest(t.digest)),
        h('td', { 'data-label': 'Size' }, t.problem ? h('span', { class: 'bad-text' }, t.problem) : bytes(t.size)),
        layersCell(t),
        h('td', { 'data-label': 'Update from previous', class: 'update' }, update(t)))))));
}

export async function imagesPage(view) {
  let timer = null;
  const render = async () => {
    timer = null;
    const repos = await api.get('/images');
    draw(view, repos);
    const pending = repos.some((r) => r.tags.some((t) => t.deltas.some((d) => PENDING.includes(d.state))));
    if (pending) timer = setTimeout(() => render().catch(() => {}), 2000);
  };
  await render();
  return () => { if (timer) clearTimeout(timer); };
}

function draw(view, repos) {
  mount(view,
    h('div', { class: 'page-head' }, h('h1', {}, 'Images'),
      h('p', { class: 'summary' }, `${repos.length} ${repos.length === 1 ? 'repository' : 'repositories'} in the controller's registry`)),
    repos.length
      ? h('div', { id: 'repos' }, repos.map(repository))
      : h('div', { class: 'card' }, h('p', { class: 'muted' },
        'The registry is empty. Push an image, e.g. ',
        h('code', {}, 'skopeo copy oci:DIR:1 docker://HOST:PORT/app:1 --dest-creds coracle:$(cat admin.token)'))));
}
