// Token view: each turn's new prompt tokens, a visible boundary, then the generated tokens coloured by probability.
import { fmt, h } from './dom.js';

const LOW = 0.1; // tokens the model gave less than this probability are marked
const PROMPT_SHOWN = 48; // the end of each prompt (the template's tokens before the generation); the rest on a click

function colour(probability) {
  return `hsl(${Math.round(120 * probability)}, 75%, ${Math.round(88 - 10 * (1 - probability))}%)`;
}

function label(data, id) {
  if (!data.pieces) return String(id);
  const text = data.pieces[String(id)];
  if (text === null || text === undefined) return `<${id}>`;
  return text.replace(/\n/g, '↵\n');
}

function token(data, id, { logprob = null, prompt = false } = {}) {
  const special = data.special && data.special.includes(id);
  const classes = ['tok', prompt ? 'prompt' : 'gen', special ? 'special' : ''];
  const tip = [`id ${id}`];
  if (data.pieces) tip.push(JSON.stringify(data.pieces[String(id)] ?? null));
  let probability = null;
  if (logprob !== null && logprob !== undefined) {
    probability = Math.exp(logprob);
    tip.push(`logprob ${logprob.toFixed(4)}`, `p ${probability.toFixed(4)}`);
    if (probability < LOW) classes.push('low');
  }
  const span = h('span', { class: classes.join(' ').trim(), title: tip.join(' · ') }, label(data, id));
  if (probability !== null) span.style.backgroundColor = colour(probability);
  return span;
}

function legend(data) {
  const swatch = (p) => {
    const s = h('span', { class: 'swatch' });
    s.style.backgroundColor = colour(p);
    return h('span', {}, s, `p ${p}`);
  };
  return h('div', { class: 'legend', testid: 'token-legend' },
    data.tokenizer ? h('span', { testid: 'tokenizer' }, `decoded with ${data.tokenizer}`)
      : h('span', { testid: 'tokenizer' }, 'token IDs (start ng_viewer with +tokenizer=<model dir> to see text)'),
    swatch(1), swatch(0.5), swatch(0.1), swatch(0.01),
    h('span', {}, h('span', { class: 'tok low' }, 'outlined'), ` p < ${LOW}`),
    h('span', {}, h('span', { class: 'tok prompt' }, 'grey'), ' prompt'));
}

function earlier(data, ids) {
  const chip = h('span', { class: 'carried', testid: 'show-prompt', title: 'show these tokens' },
    `⋯ ${fmt(ids.length)} more prompt tokens (show)`);
  chip.addEventListener('click', () => chip.replaceWith(...ids.map((id) => token(data, id, { prompt: true }))));
  return chip;
}

function turnView(data, turn) {
  const generated = turn.generation.map((id, k) => token(data, id, { logprob: turn.logprobs[k] }));
  const low = turn.logprobs.filter((lp) => lp !== null && Math.exp(lp) < LOW).length;
  const hidden = Math.max(0, turn.prompt.length - PROMPT_SHOWN);
  const summary = turn.continues
    ? `prompt ${fmt(turn.prompt_length)} tokens (${fmt(turn.carried)} from the turns before, ${fmt(turn.prompt.length)} new)`
    : `prompt ${fmt(turn.prompt_length)} tokens`;
  return h('div', { class: 'turn', testid: 'token-turn' },
    h('div', { class: 'title' }, `turn ${turn.turn} · ${summary} · generated ${fmt(turn.generation.length)} tokens`,
      low ? h('span', { class: 'badge failed', testid: 'low-count' }, `${low} below p ${LOW}`) : null),
    turn.continues ? null : h('div', { class: 'warn-box', testid: 'diverges' },
      `This prompt does not continue the previous turn's prompt + generation: they differ from token ${turn.diverges_at}. `
      + 'The chat template re-rendered the history (a template or tokenization mismatch the trainer will see).'),
    h('div', { class: 'tokens', testid: 'tokens' },
      turn.carried ? h('span', { class: 'carried' }, `⋯ ${fmt(turn.carried)} tokens of earlier turns`) : null,
      hidden ? earlier(data, turn.prompt.slice(0, hidden)) : null,
      turn.prompt.slice(hidden).map((id) => token(data, id, { prompt: true })),
      h('span', { class: 'boundary', testid: 'boundary' }, `▼ generation of turn ${turn.turn}`),
      generated),
    turn.text !== undefined ? h('details', { class: 'panel' }, h('summary', {}, 'generated text'),
      h('pre', { testid: 'generated-text' }, turn.text)) : null);
}

export function tokenView(data) {
  if (!data.turns.length) {
    return h('p', { class: 'muted', testid: 'no-tokens' },
      'This rollout has no token data (collect with responses_api_models/vllm_model/configs/vllm_model_for_training.yaml).');
  }
  return h('div', { testid: 'token-view' }, legend(data), data.turns.map((turn) => turnView(data, turn)));
}
