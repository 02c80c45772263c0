// Summary: how the run went (expected / finished / failed), rewards, lengths, pass@k, failures by class.
import { card, fill, fmt, getJson, h, histogram } from './dom.js';

function countsTable(title, counts, testid, go) {
  const entries = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return null;
  return h('div', { class: 'panel', testid }, h('h3', {}, title),
    h('table', {}, h('tbody', {}, entries.map(([name, count]) => h('tr', { class: 'clickable',
      onclick: () => go({ view: 'rollouts', status: 'failed', is: `class:${name}` }) },
    h('td', {}, name), h('td', { class: 'num' }, fmt(count)))))));
}

function passAtK(data) {
  if (!data.pass_at_k.length) return null;
  return h('div', { class: 'panel', testid: 'pass-at-k' },
    h('h3', {}, `pass@k (reward ≥ ${fmt(data.pass_threshold)}, ${fmt(data.tasks_with_repeats)} tasks with repeats)`),
    h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'k'), h('th', { class: 'num' }, 'pass@k'),
      h('th', { class: 'num' }, 'tasks'))),
    h('tbody', {}, data.pass_at_k.map((row) => h('tr', {}, h('td', {}, `pass@${row.k}`),
      h('td', { class: 'num' }, fmt(row.pass_at_k)), h('td', { class: 'num' }, fmt(row.tasks)))))));
}

function fieldsTable(fields) {
  const rows = Object.entries(fields).filter(([, stats]) => stats.count);
  return h('div', { class: 'panel', testid: 'fields' }, h('h3', {}, 'Numeric fields'),
    h('table', {}, h('thead', {}, h('tr', {}, ['field', 'count', 'mean', 'min', 'max'].map((name, k) =>
      h('th', { class: k ? 'num' : null }, name)))),
    h('tbody', {}, rows.map(([name, stats]) => h('tr', {}, h('td', {}, name),
      ['count', 'mean', 'min', 'max'].map((key) => h('td', { class: 'num' }, fmt(stats[key]))))))));
}

export async function render(root, ctx) {
  const data = await getJson('/api/summary');
  const written = data.summary_file;
  const expected = data.expected;
  const accounted = data.rollouts + data.failed;
  const cards = h('div', { class: 'cards', testid: 'summary-cards' },
    card('expected', expected === null ? '—' : fmt(expected), 'card-expected'),
    card('finished', fmt(data.finished), 'card-finished'),
    card('of which incomplete (cut short)', fmt(data.incomplete), 'card-incomplete'),
    card('failed', fmt(data.failed), 'card-failed'),
    data.errors ? card('errored responses', fmt(data.errors), 'card-errors') : null,
    expected !== null ? card('missing', fmt(Math.max(0, expected - accounted)), 'card-missing') : null,
    card('mean reward', fmt(data.mean_reward), 'card-mean-reward'),
    card('tasks', fmt(data.tasks), 'card-tasks'),
    data.tasks_with_repeats ? card('zero-advantage groups', `${fmt(data.zero_advantage_tasks)} of ${fmt(
      data.tasks_with_repeats)}`, 'card-zero') : null);
  const notes = [];
  if (!written) notes.push('No summary file yet: ng_collect_rollouts writes it when the run ends (expected is then known).');
  if (data.bad_lines.count) {
    notes.push(`${fmt(data.bad_lines.count)} lines are not rollouts: ` + data.bad_lines.first.map(
      (bad) => `${bad.file} line ${bad.line}: ${bad.reason}`).join('; '));
  }
  const hist = data.histograms;
  fill(root,
    h('h2', {}, 'Summary'), cards,
    notes.map((note) => h('div', { class: 'warn-box', testid: 'summary-note' }, note)),
    h('h2', {}, 'Distributions'),
    h('div', { class: 'grid2' },
      histogram('reward', hist.reward, 'hist-reward'),
      histogram('output tokens', hist.output_tokens, 'hist-output-tokens'),
      histogram('output characters', hist.output_chars, 'hist-output-chars'),
      histogram('turns (model calls)', hist.turns, 'hist-turns')),
    h('div', { class: 'grid2' }, passAtK(data),
      countsTable('Failures by class', data.failed_by_class, 'failures-by-class', ctx.go),
      fieldsTable(data.fields)));
}

export const refresh = (ctx) => {
  const root = document.querySelector('[data-testid="view-summary"]');
  return root ? render(root, ctx) : null;
};
