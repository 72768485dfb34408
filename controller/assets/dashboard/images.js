// The registry: repositories, their tags in version order with digests and sizes, and how
// many layer bytes each version adds over the one before.

import { api } from './api.js';
import { h, mount } from './dom.js';
import { bytes, shortDigest } from './format.js';

function newBytes(tag) {
  if (tag.new_bytes === null || tag.new_bytes === undefined) return h('span', { class: 'muted' }, 'first version');
  const share = tag.size ? Math.round((100 * tag.new_bytes) / tag.size) : 0;
  return h('span', { title: `layers ${tag.tag} has that ${tag.previous} lacks` },
    `${bytes(tag.new_bytes)} `, h('span', { class: 'muted' }, `vs ${tag.previous} (${share} %)`));
}

function repository(repo) {
  const total = repo.tags.reduce((sum, t) => sum + t.size, 0);
  return h('section', { class: 'card flush repo', 'data-repo': repo.name },
    h('div', { class: 'repo-head' }, h('h2', {}, repo.name),
      h('span', { class: 'muted' }, `${repo.tags.length} tag${repo.tags.length === 1 ? '' : 's'} · ${bytes(total)} in all`)),
    h('table', { class: 'responsive' },
      h('thead', {}, h('tr', {}, ['Tag', 'Digest', 'Size', 'Layers', 'New over previous'].map((t) => h('th', {}, t)))),
      h('tbody', {}, repo.tags.map((t) => h('tr', { 'data-tag': t.tag },
        h('td', { 'data-label': 'Tag', class: 'name' }, t.tag),
        h('td', { 'data-label': 'Digest', class: 'mono', title: t.digest }, shortDigest(t.digest)),
        h('td', { 'data-label': 'Size' }, t.problem ? h('span', { class: 'bad-text' }, t.problem) : bytes(t.size)),
        h('td', { 'data-label': 'Layers', title: t.layers.map((l) => `${shortDigest(l.digest)} ${bytes(l.size)}`).join('\n') },
          `${t.layers.length} (${t.layers.map((l) => bytes(l.size)).join(', ') || '—'})`),
        h('td', { 'data-label': 'New over previous' }, newBytes(t)))))));
}

export async function imagesPage(view) {
  const repos = await api.get('/images');
  mount(view,
    h('div', { class: 'page-head' }, h('h1', {}, 'Images'),
      h('p', { class: 'summary' }, `${repos.length} ${repos.length === 1 ? 'repository' : 'repositories'} in the controller's registry`)),
    repos.length
      ? h('div', { id: 'repos' }, repos.map(repository))
      : h('div', { class: 'card' }, h('p', { class: 'muted' },
        'The registry is empty. Push an image, e.g. ',
        h('code', {}, 'skopeo copy oci:DIR:1 docker://HOST:PORT/app:1 --dest-creds coracle:$(cat admin.token)'))));
}
