// The login page: the admin token buys an HttpOnly session cookie; the token itself is not
// kept by the page.

import { request } from './api.js';
import { h, mount } from './dom.js';

export function loginPage(view) {
  const input = h('input', {
    id: 'token', type: 'password', name: 'token', autocomplete: 'current-password',
    required: true, placeholder: 'admin token', 'aria-label': 'Admin token',
  });
  const message = h('p', { class: 'error', id: 'login-error', role: 'alert', hidden: true });
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'card login', onsubmit: submit },
    h('h1', {}, 'Coracle'),
    h('p', { class: 'muted' }, 'Sign in with the controller\'s admin token (the file ',
      h('code', {}, 'admin.token'), ' in its data directory) or an API token from ',
      h('code', {}, 'coracle token create'), '; the session has that token\'s scope.'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    message,
    button);

  async function submit(event) {
    event.preventDefault();
    button.disabled = true;
    message.hidden = true;
    try {
      await request('/dashboard/login', { method: 'POST', body: { token: input.value } });
      const next = sessionStorage.getItem('coracle.after-login') || '#/fleet';
      sessionStorage.removeItem('coracle.after-login');
      location.hash = next;
    } catch (err) {
      message.textContent = err.status === 401
        ? 'That is not the admin token of this controller, nor a live API token. Check admin.token in its data directory.'
        : err.message;
      message.hidden = false;
      input.select();
    } finally {
      button.disabled = false;
    }
  }

  mount(view, h('div', { class: 'login-wrap' }, form));
  input.focus();
}
