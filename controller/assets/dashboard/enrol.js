// Enrolling a device from the fleet page: its name and tags, then its bootstrap file to
// download once (it holds the device's broker password; the controller keeps only a hash).

import { api } from './api.js';
import { h, mount, errorBox, toast } from './dom.js';
import { parseTags } from './device_actions.js';

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/toml' }));
  return h('a', { href: url, download: name, class: 'button', id: 'bootstrap-download' }, `Download ${name}`);
}

export function enrolPanel(onEnrolled) {
  const panel = h('div', { id: 'enrol-panel' });
  const name = h('input', { id: 'enrol-name', type: 'text', 'aria-label': 'Device name', placeholder: 'pi-berlin-7', spellcheck: 'false' });
  const tags = h('input', { id: 'enrol-tags', type: 'text', 'aria-label': 'Tags', placeholder: 'site=berlin', spellcheck: 'false' });
  const problem = h('div');
  async function enrol(event) {
    event.preventDefault();
    try {
      const reply = await api.post('/devices', { id: name.value.trim(), tags: parseTags(tags.value) });
      const file = `${reply.device.id}.bootstrap.toml`;
      mount(panel, h('div', { class: 'card action-form', id: 'enrolled' },
        h('p', {}, `${reply.device.id} is enrolled. Copy its bootstrap file to the device (mode 0600) and start the agent with it. `,
          h('strong', {}, 'It holds the device\'s password and cannot be shown again.')),
        h('div', { class: 'buttons' }, download(file, reply.bootstrap_toml),
          h('button', { type: 'button', class: 'ghost', onclick: () => mount(panel) }, 'Done'))));
      toast(`${reply.device.id} enrolled`);
      onEnrolled();
    } catch (err) {
      mount(problem, errorBox(err));
    }
  }
  const form = () => h('form', { class: 'card action-form', id: 'enrol-form', onsubmit: enrol },
    h('label', { for: 'enrol-name' }, 'Device name'), name,
    h('label', { for: 'enrol-tags' }, 'Tags (key=value, separated by spaces)'), tags, problem,
    h('div', { class: 'buttons' }, h('button', { type: 'submit' }, 'Enrol'),
      h('button', { type: 'button', class: 'ghost', onclick: () => mount(panel) }, 'Cancel')));
  const open = h('button', { type: 'button', id: 'enrol-device', onclick: () => mount(panel, form()) }, 'Enrol device');
  return { open, panel };
}
