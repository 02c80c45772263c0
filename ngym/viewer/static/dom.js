// Small helpers shared by the views. Rollout text is never parsed as HTML: every string goes in as a text node.

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith('svg:');
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'testid') el.dataset.testid = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// replaceChildren that takes what h() takes: nested arrays, and nulls for "nothing here".
export function fill(root, ...children) {
  root.replaceChildren(...children.flat(Infinity).filter((child) => child !== null && child !== undefined && child !== false)
    .map((child) => (child instanceof Node ? child : document.createTextNode(String(child)))));
  return root;
}

export async function getJson(path, params) {
  const url = new URL(path, location.origin);
  for (const [key, value] of params || []) url.searchParams.append(key, value);
  const answer = await fetch(url);
  let body;
  try { body = await answer.json(); } catch { body = {}; }
  if (!answer.ok) throw new ApiError(body?.error?.message || `${answer.status} ${answer.statusText}`, answer.status);
  return body;
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return '—';
  if (typeof value !== 'number') return String(value);
  if (Number.isInteger(value)) return value.toLocaleString('en-US');
  return Number(value.toFixed(digits)).toString();
}

export function rewardCell(value) {
  const cls = value === null || value === undefined ? 'reward' : value > 0 ? 'reward high' : 'reward low';
  return h('span', { class: cls }, fmt(value));
}

export function badge(status, text) {
  return h('span', { class: `badge ${status}` }, text ?? status);
}

export function errorBox(error) {
  return h('div', { class: 'error-box', testid: 'error' }, error.message || String(error));
}

export function card(label, value, testid) {
  return h('div', { class: 'card', testid }, h('div', { class: 'value' }, value), h('div', { class: 'label' }, label));
}

export function pager(page, pages, go, testid = 'pager') {
  return h('div', { class: 'pager', testid },
    h('button', { disabled: page <= 1, onclick: () => go(page - 1), testid: 'prev-page' }, '‹ Prev'),
    h('span', { class: 'muted' }, `page ${fmt(page)} of ${fmt(pages)}`),
    h('button', { disabled: page >= pages, onclick: () => go(page + 1), testid: 'next-page' }, 'Next ›'));
}

// A long value: the first part shown, the rest a click away; `cut` values (too long for the conversation answer)
// are fetched whole from the server.
export function longText(value, rowId, { limit = 3000, pre = false } = {}) {
  const { text, cut, length, path } = value || { text: '' };
  const tag = pre ? 'pre' : 'div';
  if (!cut && text.length <= limit) return h(tag, { class: 'text' }, text);
  const total = cut ? length : text.length;
  const body = h(tag, { class: 'text' }, text.slice(0, limit) + '…');
  const button = h('button', { class: 'more', testid: 'show-all' }, `show all (${fmt(total)} characters)`);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      body.textContent = cut ? (await getJson(`/api/rows/${rowId}/value`, [['path', path]])).text : text;
      button.remove();
    } catch (error) {
      button.replaceWith(errorBox(error));
    }
  });
  return h('div', {}, body, button);
}

// A hand-drawn histogram: bars with their counts in a tooltip, the range under them.
export function histogram(title, data, testid) {
  const box = h('div', { class: 'panel hist', testid }, h('h3', {}, title));
  if (!data || !data.count) {
    box.append(h('p', { class: 'muted' }, 'no values'));
    return box;
  }
  const width = 360, height = 120, bins = data.bins, most = Math.max(...bins.map((b) => b.count), 1);
  const barWidth = width / bins.length;
  const svg = h('svg:svg', { width, height: height + 18, viewBox: `0 0 ${width} ${height + 18}`, role: 'img' });
  bins.forEach((bin, k) => {
    const barHeight = Math.max(bin.count ? 2 : 0, (bin.count / most) * height);
    const label = bin.low === bin.high ? fmt(bin.low) : `${fmt(bin.low)} – ${fmt(bin.high)}`;
    svg.append(h('svg:rect', { class: 'bar', x: k * barWidth + 1, y: height - barHeight, width: Math.max(1, barWidth - 2),
      height: barHeight }, h('svg:title', {}, `${label}: ${fmt(bin.count)}`)));
  });
  svg.append(h('svg:text', { x: 0, y: height + 13 }, fmt(data.min)));
  svg.append(h('svg:text', { x: width, y: height + 13, 'text-anchor': 'end' }, fmt(data.max)));
  box.append(svg, h('div', { class: 'muted' }, `${fmt(data.count)} values, mean ${fmt(data.mean)}`));
  return box;
}
