// One rollout: the reward, verifier fields and any error pinned on top; the task's input; then each turn.
import { badge, errorBox, fill, fmt, getJson, h, longText, rewardCell } from './dom.js';
import { tableParams } from './table.js';
import { tokenView } from './tokens.js';

function message(view, rowId) {
  if (view.kind === 'reasoning') {
    return h('details', { class: 'msg reasoning', testid: 'reasoning' }, h('summary', {}, 'reasoning'),
      longText(view, rowId));
  }
  if (view.kind === 'tool_call') {
    return h('div', { class: 'msg tool_call', testid: 'tool-call' },
      h('div', { class: 'who' }, `tool call: ${view.name}`, view.call_id ? h('span', { class: 'muted' }, ` · ${view.call_id}`) : null),
      longText(view.arguments, rowId, { pre: true }),
      view.arguments.json === false ? h('div', { class: 'warn-box' }, 'arguments are not valid JSON') : null);
  }
  if (view.kind === 'tool_output') {
    return h('div', { class: 'msg tool_output', testid: 'tool-output' },
      h('div', { class: 'who' }, 'tool output', view.call_id ? h('span', { class: 'muted' }, ` · ${view.call_id}`) : null),
      longText(view.output, rowId, { pre: view.output.json }));
  }
  if (view.kind === 'message') {
    return h('div', { class: `msg ${view.role}`, testid: `message-${view.role}` }, h('div', { class: 'who' }, view.role),
      longText(view, rowId));
  }
  return h('div', { class: 'msg' }, h('div', { class: 'who' }, view.type || 'item'), longText(view.body, rowId, { pre: true }));
}

function pinned(view) {
  const fields = Object.entries(view.fields || {});
  const usage = view.usage || {};
  const kv = (label, value) => (value === null || value === undefined ? null
    : h('span', { class: 'kv' }, h('b', {}, `${label} `), typeof value === 'object' && value.text !== undefined
      ? value.text : typeof value === 'object' ? JSON.stringify(value) : String(value)));
  const status = view.kind === 'failure' ? 'failed' : view.status === 'incomplete' ? 'incomplete' : view.error ? 'error'
    : view.status || 'completed';
  return h('div', { class: 'pinned', testid: 'pinned' },
    h('div', { class: 'row' },
      view.kind === 'rollout' ? h('span', { class: 'big', testid: 'reward' }, 'reward ', rewardCell(view.reward)) : null,
      badge(status, view.kind === 'failure' ? `failed: ${view.class}` : status),
      kv('task', view.task), kv('rollout', view.rollout), kv('agent', view.agent), kv('model', view.model),
      usage.input_tokens !== undefined ? kv('usage in/out (last call)', `${fmt(usage.input_tokens)} / ${fmt(usage.output_tokens)}`) : null,
      h('span', { class: 'kv muted' }, `${view.file}:${view.line}`)),
    view.incomplete_details ? h('div', { class: 'warn-box', testid: 'incomplete' },
      `incomplete: ${view.incomplete_details.reason || JSON.stringify(view.incomplete_details)}`) : null,
    view.kind === 'failure' ? h('div', { class: 'error-box', testid: 'failure-error' },
      `HTTP ${view.http_status ?? '—'}: `, longText(view.error, view.id)) : null,
    view.error && view.kind === 'rollout' ? h('div', { class: 'error-box' }, JSON.stringify(view.error)) : null,
    fields.length ? h('div', { class: 'row', testid: 'verifier-fields' }, fields.map(([key, value]) => kv(key, value))) : null);
}

function conversation(view) {
  const parts = [];
  if (view.instructions) parts.push(h('div', { class: 'msg system' }, h('div', { class: 'who' }, 'instructions'),
    longText(view.instructions, view.id)));
  if (view.kind === 'failure') {
    parts.push(h('h3', {}, 'Task input'), view.input_from ? h('p', { class: 'muted' },
      `from ${view.input_from}, a finished rollout of the same task`) : h('p', { class: 'muted' },
      'no finished rollout of this task holds its input'));
  } else {
    parts.push(h('h3', {}, 'Task input'));
  }
  parts.push(...view.input.map((item) => message(item, view.input_from || view.id)));
  if (view.tools && view.tools.length) parts.push(h('details', { class: 'panel' },
    h('summary', {}, `tools: ${view.tools.join(', ')}`), longText(view.tools_json, view.id, { pre: true })));
  if (view.settings) parts.push(h('details', { class: 'panel' }, h('summary', {}, 'request settings'),
    longText(view.settings, view.id, { pre: true })));
  if (view.kind === 'rollout') {
    parts.push(h('h3', {}, `Output: ${view.turns.length} turn${view.turns.length === 1 ? '' : 's'}`));
    parts.push(...(view.before_turns || []).map((item) => message(item, view.id)));
    for (const turn of view.turns) {
      const tokens = turn.tokens ? ` · prompt ${fmt(turn.tokens.prompt)} tokens · generated ${fmt(turn.tokens.generation)} tokens` : '';
      parts.push(h('div', { class: 'turn', testid: 'turn' }, h('div', { class: 'title' }, `turn ${turn.turn}${tokens}`),
        turn.items.map((item) => message(item, view.id)), turn.tool_outputs.map((item) => message(item, view.id))));
    }
  }
  return h('div', { testid: 'conversation' }, parts);
}

export async function render(root, ctx) {
  const id = ctx.params.get('id');
  const query = tableParams(ctx.params).filter(([key]) => key !== 'page');
  const view = await getJson(`/api/rows/${encodeURIComponent(id || '')}`, query);
  const tab = ctx.params.get('tab') === 'tokens' && view.has_tokens ? 'tokens' : 'conversation';
  const to = (params) => ctx.go([['view', 'rollout'], ...params, ...query]);
  const nav = h('div', { class: 'toolbar' },
    h('button', { testid: 'back', onclick: () => ctx.go([['view', 'rollouts'], ...query]) }, '← table'),
    h('button', { testid: 'previous', disabled: !view.previous, onclick: () => to([['id', view.previous], ['tab', tab]]) }, '‹ previous'),
    h('span', { class: 'muted' }, view.position ? `${fmt(view.position)} of ${fmt(view.total)}` : 'not in the current filter'),
    h('button', { testid: 'next', disabled: !view.next, onclick: () => to([['id', view.next], ['tab', tab]]) }, 'next ›'),
    view.kind === 'rollout' && view.task !== null ? h('button', { testid: 'open-group',
      onclick: () => ctx.go({ view: 'task', task: view.task }) }, `all rollouts of task ${view.task}`) : null);
  const tabs = view.kind === 'rollout' ? h('div', { class: 'tabs' },
    h('button', { class: tab === 'conversation' ? 'active' : null, testid: 'tab-conversation',
      onclick: () => to([['id', id]]) }, 'Conversation'),
    h('button', { class: tab === 'tokens' ? 'active' : null, testid: 'tab-tokens', disabled: !view.has_tokens,
      title: view.has_tokens ? null : 'no token data: collect with vllm_model_for_training.yaml',
      onclick: () => to([['id', id], ['tab', 'tokens']]) }, 'Tokens')) : null;
  const body = h('div', {});
  fill(root, nav, h('h2', {}, `Rollout ${id}`), pinned(view), tabs, body);
  if (tab === 'tokens') {
    body.replaceChildren(h('p', { class: 'muted' }, 'Loading tokens…'));
    try {
      body.replaceChildren(tokenView(await getJson(`/api/rows/${encodeURIComponent(id)}/tokens`)));
    } catch (error) {
      body.replaceChildren(errorBox(error));
    }
  } else {
    body.replaceChildren(conversation(view));
  }
}
