// The rollout table: filters, sort by any numeric column, pages; all of it in the URL.
import { badge, errorBox, fill, fmt, getJson, h, pager, rewardCell } from './dom.js';

export const TABLE_KEYS = ['sort', 'status', 'agent', 'range', 'is', 'q', 'page', 'per_page'];
const LABELS = { tool_calls: 'tool calls', output_tokens: 'out tokens', output_chars: 'out chars', input_tokens: 'in tokens' };

export function tableParams(params) {
  return [...params].filter(([key]) => TABLE_KEYS.includes(key));
}

function withParams(ctx, change) {
  const params = new URLSearchParams(tableParams(ctx.params));
  change(params);
  params.delete('page');
  return [['view', 'rollouts'], ...params];
}

function rangeOf(params, field) {
  const found = params.getAll('range').find((value) => value.split(':')[0] === field);
  if (!found) return ['', ''];
  const [, low = '', high = ''] = found.split(':');
  return [low, high];
}

function filterBar(ctx, fields) {
  const params = ctx.params;
  const apply = (change) => ctx.go(withParams(ctx, change));
  const search = h('input', { type: 'search', placeholder: 'search all text (Enter)', value: params.get('q') || '',
    testid: 'search' });
  search.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') apply((p) => (search.value ? p.set('q', search.value) : p.delete('q')));
  });
  const status = h('select', { testid: 'status-filter', onchange: () => apply((p) => {
    p.delete('status');
    if (status.value) p.set('status', status.value);
  }) }, h('option', { value: '' }, 'any status'), fields.statuses.map((name) => h('option', {
    value: name, selected: params.get('status') === name }, name)));
  const agent = fields.agents.length > 1 ? h('select', { testid: 'agent-filter', onchange: () => apply((p) => {
    p.delete('agent');
    if (agent.value) p.set('agent', agent.value);
  }) }, h('option', { value: '' }, 'any agent'), fields.agents.map((name) => h('option', {
    value: name, selected: params.get('agent') === name }, name))) : null;
  const [low, high] = rangeOf(params, 'reward');
  const rewardLow = h('input', { class: 'small', placeholder: 'min', value: low, testid: 'reward-min' });
  const rewardHigh = h('input', { class: 'small', placeholder: 'max', value: high, testid: 'reward-max' });
  const setReward = () => apply((p) => {
    const kept = p.getAll('range').filter((value) => value.split(':')[0] !== 'reward');
    p.delete('range');
    kept.forEach((value) => p.append('range', value));
    if (rewardLow.value || rewardHigh.value) p.append('range', `reward:${rewardLow.value}:${rewardHigh.value}`);
  });
  for (const input of [rewardLow, rewardHigh]) input.addEventListener('keydown', (e) => e.key === 'Enter' && setReward());
  return h('div', { class: 'filters', testid: 'filters' }, search, status, agent,
    h('span', { class: 'muted' }, 'reward'), rewardLow, '–', rewardHigh,
    h('button', { onclick: setReward, testid: 'reward-apply' }, 'apply'),
    fieldFilter(ctx, fields, apply),
    h('button', { onclick: () => ctx.go({ view: 'rollouts' }), testid: 'clear-filters' }, 'clear all'));
}

function fieldFilter(ctx, fields, apply) {
  const names = [...Object.keys(fields.labels), ...fields.numbers.filter((name) => name !== 'reward')];
  const field = h('select', { testid: 'field-filter' }, h('option', { value: '' }, 'field…'),
    names.map((name) => h('option', { value: name }, name)));
  const slot = h('span', {});
  field.addEventListener('change', () => {
    const name = field.value;
    if (!name) return slot.replaceChildren();
    if (fields.labels[name]) {
      const values = Object.entries(fields.labels[name]).sort((a, b) => b[1] - a[1]);
      const choice = h('select', { testid: 'field-value' }, values.map(([value, count]) =>
        h('option', { value }, `${value || '(empty)'} (${fmt(count)})`)));
      slot.replaceChildren(choice, h('button', { testid: 'field-apply', onclick: () =>
        apply((p) => p.append('is', `${name}:${choice.value}`)) }, 'add'));
    } else {
      const low = h('input', { class: 'small', placeholder: 'min', testid: 'field-min' });
      const high = h('input', { class: 'small', placeholder: 'max', testid: 'field-max' });
      slot.replaceChildren(low, '–', high, h('button', { testid: 'field-apply', onclick: () =>
        apply((p) => p.append('range', `${name}:${low.value}:${high.value}`)) }, 'add'));
    }
  });
  return h('span', {}, field, slot);
}

function describe(key, value) {
  if (key === 'is') return value.replace(':', ' = ');
  if (key !== 'range') return `${key}: ${value}`;
  const [field, low, high] = value.split(':');
  if (low && high) return low === high ? `${field} = ${low}` : `${low} ≤ ${field} ≤ ${high}`;
  return low ? `${field} ≥ ${low}` : `${field} ≤ ${high}`;
}

function chips(ctx) {
  const params = ctx.params;
  const active = [...params].filter(([key]) => ['range', 'is', 'q', 'status', 'agent'].includes(key));
  if (!active.length) return null;
  return h('div', { class: 'chips', testid: 'chips' }, active.map(([key, value]) => h('span', { class: 'chip' },
    describe(key, value),
    h('button', { title: 'remove', onclick: () => ctx.go(withParams(ctx, (p) => {
      const kept = p.getAll(key).filter((v) => v !== value);
      p.delete(key);
      kept.forEach((v) => p.append(key, v));
    })) }, '×'))));
}

function header(ctx, name, numeric) {
  const sort = ctx.params.get('sort') || '';
  const mark = sort === name ? ' ▲' : sort === `-${name}` ? ' ▼' : '';
  if (!numeric) return h('th', {}, name);
  return h('th', { class: 'num sortable', testid: `sort-${name}`, onclick: () => ctx.go(withParams(ctx, (p) =>
    p.set('sort', sort === `-${name}` ? name : `-${name}`))) }, (LABELS[name] || name) + mark);
}

function results(ctx, data) {
  // Columns no row on this page has (a failures-only field among rollouts) are left out.
  const columns = data.columns.filter((name) => name === 'reward' || data.rows.some((row) => row.numbers[name] !== null
    && row.numbers[name] !== undefined));
  const query = tableParams(ctx.params).filter(([key]) => key !== 'page');
  const open = (id) => ctx.go([['view', 'rollout'], ['id', id], ...query]);
  const body = data.rows.map((row) => h('tr', { class: 'clickable', testid: 'row', 'data-id': row.id,
    onclick: () => open(row.id) },
  h('td', { class: 'muted' }, row.id),
  h('td', { class: 'num' }, fmt(row.task)), h('td', { class: 'num' }, fmt(row.rollout)),
  h('td', {}, badge(row.status, row.status === 'failed' && row.labels.class ? `failed: ${row.labels.class}` : row.status)),
  columns.map((name) => h('td', { class: 'num' }, name === 'reward' ? rewardCell(row.numbers[name]) : fmt(row.numbers[name]))),
  h('td', { class: 'preview' }, row.prompt ? h('div', { class: 'prompt' }, row.prompt) : null, row.answer)));
  const goPage = (page) => ctx.go([['view', 'rollouts'], ...query, ['page', String(page)]]);
  return h('div', {},
    h('div', { class: 'toolbar' }, h('b', { testid: 'total' }, `${fmt(data.total)} rows`),
      pager(data.page, data.pages, goPage)),
    h('table', { testid: 'rollout-table' }, h('thead', {}, h('tr', {}, h('th', {}, 'row'), header(ctx, 'task', true),
      header(ctx, 'rollout', true), h('th', {}, 'status'), columns.map((name) => header(ctx, name, true)),
      h('th', {}, 'prompt / answer'))), h('tbody', {}, body)),
    data.rows.length ? null : h('p', { class: 'muted', testid: 'no-rows' }, 'No rows match.'));
}

let resultsBox = null;

export async function render(root, ctx) {
  const [fields, data] = await Promise.all([getJson('/api/fields'), getJson('/api/rows', tableParams(ctx.params))]);
  resultsBox = h('div', { testid: 'results' }, results(ctx, data));
  fill(root, h('h2', {}, 'Rollouts'), filterBar(ctx, fields), chips(ctx), resultsBox);
}

export async function refresh(ctx) {
  if (!resultsBox || !resultsBox.isConnected) return;
  try {
    const data = await getJson('/api/rows', tableParams(ctx.params));
    resultsBox.replaceChildren(results(ctx, data));
  } catch (error) {
    resultsBox.replaceChildren(errorBox(error));
  }
}
