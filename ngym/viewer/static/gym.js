// Gym: the running ng_run's servers and, under each model server, every vLLM server's load (what ng_status
// shows), refreshed while the view is open; the vLLM the server found busiest (`busiest`) is marked.
import { errorBox, fill, fmt, getJson, h } from './dom.js';

const REFRESH_MS = 2000;

function percent(value) {
  return value === null || value === undefined ? '—' : `${Math.round(100 * value)}%`;
}

function vllmTable(server) {
  const entries = server.vllm_servers || [];
  const columns = ['vLLM', 'rotation', 'ngym in flight', 'turns', 'running', 'waiting', 'KV cache', 'prefix hits'];
  return h('table', { testid: `vllm-${server.name}` },
    h('thead', {}, h('tr', {}, columns.map((name, k) => h('th', { class: k > 1 ? 'num' : null }, name)))),
    h('tbody', {}, entries.map((entry) => {
      const vllm = entry.vllm;
      const turns = Object.values(entry.turns || {}).reduce((a, b) => a + b, 0);
      return h('tr', { class: entry.busiest ? 'busiest' : null, testid: entry.busiest ? 'vllm-busiest' : 'vllm-row' },
        h('td', {}, entry.url, entry.busiest ? h('span', { class: 'warn' }, '  ← busiest') : ''),
        h('td', {}, entry.in_rotation ? 'in' : 'OUT'),
        h('td', { class: 'num' }, fmt(entry.in_flight)), h('td', { class: 'num' }, fmt(turns)),
        vllm ? [h('td', { class: 'num' }, fmt(vllm.running)), h('td', { class: 'num' }, fmt(vllm.waiting)),
          h('td', { class: 'num' }, percent(vllm.kv_cache_usage)),
          h('td', { class: 'num' }, percent(vllm.prefix_cache_hit_rate))]
          : h('td', { colspan: 4, class: 'muted' }, entry.vllm_unavailable || 'no metrics'));
    })));
}

function draw(root, data) {
  const models = data.servers.filter((server) => server.vllm_servers);
  fill(root,
    h('p', { class: 'muted' }, `ng_run at ${data.head}`),
    h('div', { class: 'panel', testid: 'gym-servers' }, h('h3', {}, 'Servers'),
      h('table', {}, h('tbody', {}, data.servers.map((server) => h('tr', {},
        h('td', {}, server.name), h('td', {}, `${server.server_type}/${server.implementation}`),
        h('td', {}, server.url || '—'),
        h('td', { class: server.status === 'ok' ? null : 'warn' }, server.status)))))),
    models.map((server) => h('div', { class: 'panel' }, h('h3', {}, `${server.name}: vLLM servers`),
      vllmTable(server))));
}

export async function render(root) {
  draw(root, await getJson('/api/gym'));
  const again = async () => {
    if (!root.isConnected) return;
    try {
      draw(root, await getJson('/api/gym'));
    } catch (error) {
      root.replaceChildren(errorBox(error));
    }
    setTimeout(again, REFRESH_MS);
  };
  setTimeout(again, REFRESH_MS);
}
