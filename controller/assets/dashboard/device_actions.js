// What an operator changes on one device from its page: its tags (which rollouts pick it)
// and the app it runs (a compose file deployed to this device alone, as
// `coracle deploy FILE --device ID` does).

import { api } from './api.js';
import { h, mount, errorBox, toast } from './dom.js';

// "k=v k2=v2" (spaces or commas between) → { k: v }; a malformed word is an error naming it.
export function parseTags(text) {
  const tags = {};
  for (const word of text.split(/[\s,]+/).filter(Boolean)) {
    const at = word.indexOf('=');
    if (at <= 0) throw new Error(`"${word}" is not a tag: write key=value`);
    tags[word.slice(0, at)] = word.slice(at + 1);
  }
  return tags;
}

function tagEditor(id, current, done) {
  const input = h('input', {
    id: 'tags-input', type: 'text', 'aria-label': 'Tags', spellcheck: 'false',
    value: Object.entries(current).map(([k, v]) => `${k}=${v}`).join(' '),
    placeholder: 'site=berlin ring=canary',
  });
  const problem = h('div');
  async function save(event) {
    event.preventDefault();
    try {
      const wanted = parseTags(input.value);
      const remove = Object.keys(current).filter((k) => !(k in wanted));
      await api.patch(`/devices/${id}/tags`, { set: wanted, remove });
      toast(`Tags of ${id} saved`);
      done(true);
    } catch (err) {
      mount(problem, errorBox(err));
    }
  }
  return h('form', { class: 'card action-form', id: 'tags-form', onsubmit: save },
    h('label', { for: 'tags-input' }, 'Tags (key=value, separated by spaces)'), input, problem,
    h('div', { class: 'buttons' },
      h('button', { type: 'submit' }, 'Save tags'),
      h('button', { type: 'button', class: 'ghost', onclick: () => done(false) }, 'Cancel')));
}

function deployForm(id, done) {
  const text = h('textarea', {
    id: 'deploy-compose', rows: 12, spellcheck: 'false', 'aria-label': 'Compose file',
    placeholder: 'services:\n  web:\n    image: hello:1\n',
  });
  const file = h('input', {
    type: 'file', accept: '.yml,.yaml', 'aria-label': 'Load a compose file',
    onchange: async () => { if (file.files[0]) text.value = await file.files[0].text(); },
  });
  const problem = h('div');
  const submit = h('button', { type: 'submit' }, 'Deploy');
  async function deploy(event) {
    event.preventDefault();
    if (!text.value.trim()) { mount(problem, errorBox(new Error('The compose file is empty.'))); return; }
    submit.disabled = true;
    try {
      const reply = await api.post(`/devices/${id}/deploy`, { compose: text.value });
      toast(`Generation ${reply.generation} sent to ${id}: ${reply.services.join(', ')}`);
      done(true);
    } catch (err) {
      mount(problem, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  }
  return h('form', { class: 'card action-form', id: 'deploy-form', onsubmit: deploy },
    h('label', { for: 'deploy-compose' }, 'Compose file (docker-compose YAML; images from this controller\'s registry or a logged-in one)'),
    text, file, problem,
    h('div', { class: 'buttons' }, submit,
      h('button', { type: 'button', class: 'ghost', onclick: () => done(false) }, 'Cancel')));
}

// The buttons and, below them, the form that is open (at most one).
export function deviceActions(id, tags, reload) {
  const panel = h('div', { id: 'device-action' });
  const close = (changed) => { mount(panel); if (changed) reload(); };
  return h('div', { class: 'device-actions' },
    h('div', { class: 'buttons' },
      h('button', { type: 'button', class: 'ghost', id: 'edit-tags', onclick: () => mount(panel, tagEditor(id, tags, close)) }, 'Edit tags'),
      h('button', { type: 'button', class: 'ghost', id: 'deploy-app', onclick: () => mount(panel, deployForm(id, close)) }, 'Deploy app')),
    panel);
}
