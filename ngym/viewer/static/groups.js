// Groups: a task's rollouts together, with their mean and spread; groups where every reward is the same give
// GRPO no advantage, and are flagged.
import { badge, fill, fmt, getJson, h, pager, rewardCell } from './dom.js';

const SORTS = [['task', 'task'], ['-spread', 'spread (high first)'], ['spread', 'spread (low first)'],
  ['-mean', 'mean reward (high first)'], ['mean', 'mean reward (low first)'], ['-rollouts', 'rollouts']];

function params(ctx) {
  return [...ctx.params].filter(([key]) => ['sort', 'only', 'page'].includes(key));
}

export async function render(root, ctx) {
  const data = await getJson('/api/groups', params(ctx));
  const set = (key, value) => {
    const next = new URLSearchParams(params(ctx));
    next.delete('page');
    if (value) next.set(key, value); else next.delete(key);
    ctx.go([['view', 'groups'], ...next]);
  };
  const only = h('select', { testid: 'groups-only', onchange: () => set('only', only.value) },
    [['', 'all tasks'], ['zero', 'zero advantage only'], ['mixed', 'mixed rewards only']].map(([value, text]) =>
      h('option', { value, selected: (ctx.params.get('only') || '') === value }, text)));
  const sort = h('select', { testid: 'groups-sort', onchange: () => set('sort', sort.value) },
    SORTS.map(([value, text]) => h('option', { value, selected: (ctx.params.get('sort') || 'task') === value }, text)));
  const rows = data.rows.map((group) => h('tr', { class: 'clickable', testid: 'group-row', 'data-task': group.task,
    onclick: () => ctx.go({ view: 'task', task: group.task }) },
  h('td', { class: 'num' }, fmt(group.task)), h('td', { class: 'num' }, fmt(group.rollouts)),
  h('td', { class: 'num' }, rewardCell(group.mean)), h('td', { class: 'num' }, fmt(group.spread)),
  h('td', { class: 'num' }, fmt(group.min)), h('td', { class: 'num' }, fmt(group.max)),
  h('td', { class: 'num' }, `${fmt(group.passes)} / ${fmt(group.scored)}`),
  h('td', {}, group.zero_advantage ? badge('zero', 'zero advantage') : null),
  h('td', { class: 'preview' }, group.prompt)));
  const goPage = (page) => set('page', String(page));
  fill(root,
    h('h2', {}, 'Groups by task'),
    h('p', { testid: 'groups-totals' }, `${fmt(data.tasks)} tasks; of those with repeats, `,
      h('b', {}, `${fmt(data.zero_advantage)} have every reward the same`), ` (zero advantage for GRPO), ${fmt(data.mixed)} mixed.`),
    h('div', { class: 'toolbar' }, only, sort, h('b', {}, `${fmt(data.total)} groups`), pager(data.page, data.pages, goPage)),
    h('table', { testid: 'groups-table' }, h('thead', {}, h('tr', {}, ['task', 'rollouts', 'mean', 'spread', 'min', 'max',
      `passes (≥ ${fmt(data.pass_threshold)})`, '', 'prompt'].map((name, k) => h('th', { class: k && k < 7 ? 'num' : null }, name)))),
    h('tbody', {}, rows)));
}

export const refresh = (ctx) => {
  const root = document.querySelector('[data-testid="view-groups"]');
  return root ? render(root, ctx) : null;
};

function rolloutCard(ctx, rollout) {
  const numbers = rollout.numbers;
  return h('div', { class: 'rollout-card', testid: 'rollout-card', 'data-id': rollout.id,
    onclick: () => ctx.go({ view: 'rollout', id: rollout.id }) },
  h('div', { class: 'head' }, h('b', {}, `rollout ${rollout.rollout}`), h('span', {}, 'reward ', rewardCell(numbers.reward))),
  h('div', {}, badge(rollout.status), h('span', { class: 'muted' },
    ` ${fmt(numbers.turns)} turns · ${fmt(numbers.output_tokens)} output tokens`)),
  rollout.tool_calls.map((call) => h('div', { class: 'calls' }, call)),
  h('div', { class: 'answer' }, rollout.answer));
}

export const task = {
  async render(root, ctx) {
    const number = ctx.params.get('task');
    const data = await getJson(`/api/groups/${encodeURIComponent(number || '')}`);
    fill(root,
      h('div', { class: 'toolbar' }, h('button', { onclick: () => ctx.go({ view: 'groups' }) }, '← groups'),
        h('button', { onclick: () => ctx.go({ view: 'rollouts', range: `task:${data.task}:${data.task}` }) },
          'these rollouts in the table')),
      h('h2', {}, `Task ${data.task}`),
      h('div', { class: 'pinned', testid: 'group-stats' }, h('div', { class: 'row' },
        h('span', { class: 'big' }, 'mean ', rewardCell(data.mean)),
        h('span', { class: 'kv' }, h('b', {}, 'spread '), fmt(data.spread)),
        h('span', { class: 'kv' }, h('b', {}, 'rollouts '), fmt(data.rollouts)),
        h('span', { class: 'kv' }, h('b', {}, `passes (≥ ${fmt(data.pass_threshold)}) `), `${fmt(data.passes)} / ${fmt(data.scored)}`),
        data.zero_advantage ? badge('zero', 'zero advantage: every reward is the same') : null)),
      h('h3', {}, 'Task input'),
      data.input.map((item) => h('div', { class: `msg ${item.role || ''}` }, h('div', { class: 'who' }, item.role || item.kind),
        h('div', { class: 'text' }, item.text || ''))),
      h('h3', {}, 'Rollouts'),
      h('div', { class: 'rollout-cards', testid: 'rollout-cards' }, data.members.map((rollout) => rolloutCard(ctx, rollout))),
      data.failed.length ? h('div', {}, h('h3', {}, 'Failed rollouts'), data.failed.map((failure) => h('div', {},
        h('a', { href: `?view=rollout&id=${failure.id}` }, `${failure.id}`), ` rollout ${failure.rollout}: ${failure.class}`))) : null);
  },
};
