// Two files on the same tasks (matched by prompt): mean reward per task in each, and the change.
import { card, fill, fmt, getJson, h, pager, rewardCell } from './dom.js';

function params(ctx) {
  return [...ctx.params].filter(([key]) => ['sort', 'only', 'page'].includes(key));
}

function delta(value) {
  if (value === null || value === undefined) return h('span', { class: 'muted' }, '—');
  const cls = value > 0 ? 'delta up' : value < 0 ? 'delta down' : 'delta';
  return h('span', { class: cls }, value > 0 ? `+${fmt(value)}` : fmt(value));
}

export async function render(root, ctx) {
  const data = await getJson('/api/compare', params(ctx));
  const set = (key, value) => {
    const next = new URLSearchParams(params(ctx));
    next.delete('page');
    if (value) next.set(key, value); else next.delete(key);
    ctx.go([['view', 'compare'], ...next]);
  };
  const totals = data.totals;
  const only = h('select', { testid: 'compare-only', onchange: () => set('only', only.value) },
    [['', 'all tasks'], ['both', 'tasks in both files'], ['changed', 'changed tasks']].map(([value, text]) =>
      h('option', { value, selected: (ctx.params.get('only') || '') === value }, text)));
  const sort = h('select', { testid: 'compare-sort', onchange: () => set('sort', sort.value) },
    [['delta', 'change (worst first)'], ['-delta', 'change (best first)'], ['task', 'task'], ['-a', 'A reward'],
      ['-b', 'B reward']].map(([value, text]) => h('option', { value, selected: (ctx.params.get('sort') || 'delta') === value }, text)));
  const side = (value) => (value ? [h('td', { class: 'num' }, fmt(value.task)), h('td', { class: 'num' }, fmt(value.n)),
    h('td', { class: 'num' }, rewardCell(value.mean))] : [h('td', { class: 'muted', colspan: 3 }, 'not in this file')]);
  const rows = data.rows.map((row) => h('tr', { testid: 'compare-row', class: row.a ? 'clickable' : null,
    onclick: row.a ? () => ctx.go({ view: 'task', task: row.a.task }) : null },
  side(row.a), side(row.b), h('td', { class: 'num' }, delta(row.delta)), h('td', { class: 'preview' }, row.prompt)));
  fill(root,
    h('h2', {}, 'Compare'),
    h('p', {}, h('b', {}, 'A '), h('code', { testid: 'file-a' }, data.files.a), h('br'), h('b', {}, 'B '),
      h('code', { testid: 'file-b' }, data.files.b), h('span', { class: 'muted' }, ' · change = B − A, tasks matched by prompt')),
    h('div', { class: 'cards', testid: 'compare-totals' },
      card('tasks in both', fmt(totals.tasks_in_both), 'card-both'),
      card('mean reward A', fmt(totals.mean_before), 'card-mean-a'),
      card('mean reward B', fmt(totals.mean_after), 'card-mean-b'),
      card('improved', fmt(totals.improved), 'card-improved'),
      card('regressed', fmt(totals.regressed), 'card-regressed'),
      card('unchanged', fmt(totals.unchanged), 'card-unchanged'),
      card('only in A / only in B', `${fmt(totals.only_before)} / ${fmt(totals.only_after)}`, 'card-only')),
    h('div', { class: 'toolbar' }, only, sort, h('b', {}, `${fmt(data.total)} tasks`),
      pager(data.page, data.pages, (page) => set('page', String(page)))),
    h('table', { testid: 'compare-table' }, h('thead', {}, h('tr', {}, ['A task', 'A n', 'A mean', 'B task', 'B n',
      'B mean', 'change', 'prompt'].map((name, k) => h('th', { class: k < 7 ? 'num' : null }, name)))), h('tbody', {}, rows)));
}

export const refresh = (ctx) => {
  const root = document.querySelector('[data-testid="view-compare"]');
  return root ? render(root, ctx) : null;
};
