// The dashboard's shell: hash routes to pages, one live event stream shared by the pages,
// and the way back to the login page whenever the API says 401.

import { request, setUnauthorizedHandler } from './api.js';
import { mount, errorBox } from './dom.js';
import { loginPage } from './login.js';
import { fleetPage } from './fleet.js';
import { devicePage } from './device.js';
import { rolloutsPage, rolloutPage } from './rollouts.js';
import { imagesPage } from './images.js';

const view = document.getElementById('view');
const topbar = document.getElementById('topbar');
const live = document.getElementById('live');

// Live events: one EventSource (the session cookie authenticates it); pages add listeners
// and the router removes them when the page changes.
const listeners = new Set();
let source = null;

function connectStream() {
  if (source) return;
  source = new EventSource('/api/v1/events/stream');
  source.addEventListener('open', () => { live.textContent = 'live'; live.className = 'live on'; });
  source.addEventListener('fleet', (e) => {
    let event;
    try { event = JSON.parse(e.data); } catch (_) { return; }
    for (const fn of listeners) fn(event);
  });
  source.addEventListener('lagged', () => { for (const fn of listeners) fn({ kind: 'lagged' }); });
  source.addEventListener('error', () => {
    live.textContent = 'reconnecting…';
    live.className = 'live off';
    // EventSource cannot see a 401: ask the API once, which redirects to login if needed.
    request('/api/v1/devices').catch(() => {});
  });
}

function disconnectStream() {
  if (source) source.close();
  source = null;
}

export function onFleetEvent(fn) {
  listeners.add(fn);
}

function toLogin() {
  disconnectStream();
  if (!location.hash.startsWith('#/login')) {
    const back = location.hash && location.hash !== '#/login' ? location.hash : '#/fleet';
    sessionStorage.setItem('coracle.after-login', back);
    location.hash = '#/login';
  }
}
setUnauthorizedHandler(toLogin);

const routes = [
  [/^#\/login$/, () => loginPage],
  [/^#\/fleet$/, () => fleetPage],
  [/^#\/device\/([a-z0-9-]+)$/, () => devicePage],
  [/^#\/rollouts$/, () => rolloutsPage],
  [/^#\/rollouts\/([^/]+)$/, () => rolloutPage],
  [/^#\/images$/, () => imagesPage],
];

let cleanup = null;

async function route() {
  const hash = location.hash || '#/fleet';
  if (cleanup) { cleanup(); cleanup = null; }
  document.getElementById('toast').hidden = true;
  listeners.clear();
  const match = routes.map(([re, page]) => [hash.match(re), page]).find(([m]) => m);
  if (!match) { location.hash = '#/fleet'; return; }
  const [m, page] = match;
  const isLogin = hash === '#/login';
  topbar.hidden = isLogin;
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', hash.startsWith(a.getAttribute('href')) ||
      (a.dataset.page === 'fleet' && hash.startsWith('#/device/')));
  }
  if (!isLogin) connectStream();
  try {
    cleanup = (await page()(view, ...m.slice(1).map(decodeURIComponent))) || null;
  } catch (err) {
    if (err.status !== 401) mount(view, errorBox(err));
  }
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await request('/dashboard/logout', { method: 'POST', body: {} }); } catch (_) { /* gone anyway */ }
  toLogin();
});

window.addEventListener('hashchange', route);
route();
