// The page's state is its URL (?view=...&...): every view can be shared, reloaded, or reached with Back.
import { errorBox, fmt, getJson, h } from './dom.js';
import * as compare from './compare.js';
import * as groups from './groups.js';
import * as gym from './gym.js';
import * as rollout from './rollout.js';
import * as summary from './summary.js';
import * as table from './table.js';

const VIEWS = { summary, rollouts: table, rollout, groups, task: groups.task, compare, gym };
const NAV_OF = { rollout: 'rollouts', task: 'groups' };
const POLL_MS = 1500;

const main = document.getElementById('main');
let current = null;
let version = null;
let status = null;
let refreshedAt = 0;
let refreshCost = 0;

export function go(params, { replace = false } = {}) {
  const query = new URLSearchParams(params);
  for (const [key, value] of [...query]) if (value === '' || value === 'null') query.delete(key);
  history[replace ? 'replaceState' : 'pushState'](null, '', `?${query}`);
  render();
}

function context() {
  return { go, status, params: new URLSearchParams(location.search) };
}

async function render() {
  const params = new URLSearchParams(location.search);
  const name = VIEWS[params.get('view')] ? params.get('view') : 'summary';
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('active', link.dataset.view === (NAV_OF[name] || name));
  }
  const view = VIEWS[name];
  current = view;
  const root = h('div', { testid: `view-${name}` }, h('p', { class: 'muted' }, 'Loading…'));
  main.replaceChildren(root);
  try {
    await view.render(root, context());
  } catch (error) {
    if (current === view) root.replaceChildren(errorBox(error));
  }
}

async function refresh() {
  // A view with inputs (the table's filters) redraws only its results, so typing is never interrupted.
  if (!current || !current.refresh) return true;
  // Over a large file still being indexed, a view's answer takes time: redraw at most a third of the time.
  if (Date.now() - refreshedAt < 3 * refreshCost) return false;
  const started = Date.now();
  try {
    await current.refresh(context());
  } catch (error) {
    console.warn('refresh failed', error);
  }
  refreshedAt = Date.now();
  refreshCost = refreshedAt - started;
  return true;
}

function showStatus() {
  document.getElementById('file').textContent = status.file;
  document.getElementById('file').title = status.file;
  const live = document.getElementById('live');
  const busy = status.indexing;
  const share = status.bytes ? Math.floor((100 * status.indexed_bytes) / status.bytes) : 100;
  const what = busy ? `indexing ${share}%` : status.exists ? 'live' : 'file missing';
  live.replaceChildren(h('span', { class: busy ? 'dot busy' : 'dot' }),
    h('span', { testid: 'live-rows' }, `${fmt(status.rows)} rollouts`),
    status.failures ? ` · ${fmt(status.failures)} failed` : '', ` · ${what}`, progressText(status.progress),
    status.problem ? h('span', { class: 'warn' }, ` · ${status.problem}`) : '');
  document.querySelector('#nav a[data-view="compare"]').hidden = !status.compare;
  document.querySelector('#nav a[data-view="gym"]').hidden = !status.gym;
}

// The collector's progress file (<output>.progress.json): its state, rate and ETA while it runs.
function progressText(progress) {
  if (!progress) return '';
  const parts = [` · collector ${progress.state}`];
  if (progress.expected) parts.push(` ${fmt(progress.done)}/${fmt(progress.expected)}`);
  const rate = progress.rate && progress.rate.recent;
  if (progress.state === 'running' && rate) parts.push(` · ${fmt(rate, 1)}/s`);
  if (progress.state === 'running' && progress.eta_s !== null && progress.eta_s !== undefined) {
    parts.push(` · ETA ${duration(progress.eta_s)}`);
  }
  return h('span', { testid: 'live-progress' }, parts.join(''));
}

function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

async function poll() {
  try {
    status = await getJson('/api/status');
    showStatus();
    if (version === null || status.version === version || await refresh()) version = status.version;
  } catch (error) {
    document.getElementById('live').textContent = `viewer not answering (${error.message})`;
  }
  setTimeout(poll, POLL_MS);
}

document.getElementById('nav').addEventListener('click', (event) => {
  const link = event.target.closest('a[data-view]');
  if (!link) return;
  event.preventDefault();
  go({ view: link.dataset.view });
});
window.addEventListener('popstate', render);

(async () => {
  try {
    status = await getJson('/api/status');
    version = status.version;
    showStatus();
  } catch (error) {
    main.replaceChildren(errorBox(error));
  }
  await render();
  setTimeout(poll, POLL_MS);
})();
