// The page: login, the role, and a hash router (#/live, #/overview?...)
// that mounts one view at a time. A view module exports
// mount(root, ctx) and returns a function that stops it (closes its
// stream, clears its timers), so leaving a view leaves nothing running.

import { api, onUnauthorized } from './api.js';
import * as live from './live.js';
import * as overview from './overview.js';
import * as inventory from './inventory.js';
import * as optouts from './optouts.js';
import * as changes from './changes.js';
import * as access from './access.js';

const views = { live, overview, inventory, optouts, changes, access };
const $ = id => document.getElementById(id);

let role = null;
let stop = null;

function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [name, qs] = raw.split('?');
  return { name: views[name] ? name : 'live', params: new URLSearchParams(qs || '') };
}

function show() {
  if (stop) { stop(); stop = null; }
  const { name, params } = route();
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.view === name);
  }
  const main = $('main');
  main.replaceChildren();
  main.dataset.view = name;
  // Operators get the buttons; a viewer's page has none (and the server
  // would refuse them anyway).
  stop = views[name].mount(main, { role, operator: role === 'operator', params }) || null;
}

function loggedIn(r) {
  role = r;
  $('login').hidden = true;
  $('nav').hidden = false;
  $('who').hidden = false;
  $('main').hidden = false;
  const badge = $('role');
  badge.textContent = r;
  badge.className = `role ${r}`;
  show();
}

function loggedOut(message) {
  if (stop) { stop(); stop = null; }
  role = null;
  $('main').hidden = true;
  $('main').replaceChildren();
  $('nav').hidden = true;
  $('who').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').value = '';
  $('token').focus();
}

async function login(ev) {
  ev.preventDefault();
  const token = $('token').value.trim();
  $('login-error').textContent = '';
  try {
    const r = await api('/v1/login', { method: 'POST', body: { token } });
    loggedIn(r.role);
  } catch (e) {
    $('login-error').textContent = e.status === 401 ? 'That token is not valid here.' : e.message;
  }
}

async function logout() {
  try { await api('/v1/logout', { method: 'POST' }); } catch { /* gone either way */ }
  loggedOut();
}

async function start() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  onUnauthorized(() => { if (role) loggedOut('Your session ended; log in again.'); });
  window.addEventListener('hashchange', () => { if (role) show(); });
  try {
    const r = await api('/v1/whoami');
    loggedIn(r.role);
  } catch {
    loggedOut();
  }
}

start();
