"""A quick in-process imitation of the simple_weather rollout, to check a freshly trained policy.

The real measure is ng_collect_rollouts through vLLM (README.md); this one needs neither and runs in seconds:
greedy decoding, the hermes parser's regex, simple_weather's own weather_description, and the verifier's rule.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from policy.data import Message, Sample, chat_tool, conversation, normalize_city, weather_description
from policy.encode import IGNORE, encode, render
from policy.template import IM_END

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
MAX_NEW_TOKENS = 64


def _generate(model: Any, tokenizer: Any, messages: list[Message], tools: list[dict[str, Any]]) -> str:
    import torch

    prompt = tokenizer.encode(render(messages, tools, add_generation_prompt=True)).ids
    eos = tokenizer.token_to_id(IM_END)
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    generated = [t for t in out[0, len(prompt) :].tolist() if t != eos]
    return str(tokenizer.decode(generated, skip_special_tokens=False))


def rollout_reward(model: Any, tokenizer: Any, row: dict[str, Any]) -> tuple[float, str]:
    params = row["responses_create_params"]
    tools = [chat_tool(tool) for tool in params["tools"]]
    messages: list[Message] = [{"role": item["role"], "content": item["content"]} for item in params["input"]]
    first = _generate(model, tokenizer, messages, tools)
    match = TOOL_CALL.search(first)
    try:
        city = json.loads(match.group(1))["arguments"]["city"] if match else None
    except (ValueError, KeyError, TypeError):
        city = None
    if not isinstance(city, str):
        return 0.0, f"no usable tool call: {first[:120]!r}"
    if normalize_city(city) != normalize_city(row["expected_city"]):
        return 0.0, f"called for {city!r}, not {row['expected_city']!r}"
    description = weather_description(city)
    answer = _generate(model, tokenizer, conversation(messages, city, "call_0", "{d}")[:-1], tools)
    if description.lower() not in answer.lower():
        return 0.0, f"answer {answer[:120]!r} lacks {description!r}"
    return 1.0, "ok"


def gold_probability(model: Any, tokenizer: Any, row: dict[str, Any]) -> float:
    """Probability that sampling at temperature 1 reproduces the reference turns exactly (a lower bound on
    the reward at T=1, since other answers also pass)."""
    import torch

    params = row["responses_create_params"]
    messages = [{"role": item["role"], "content": item["content"]} for item in params["input"]]
    city = row["expected_city"]
    sample = Sample(conversation(messages, city, "call_0", "{d}"), [chat_tool(t) for t in params["tools"]], city)
    encoded = encode(tokenizer, sample)
    ids = torch.tensor([encoded.ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = torch.tensor(encoded.labels[1:])
    keep = targets != IGNORE
    total = logprobs[keep].gather(1, targets[keep].unsqueeze(1)).sum().item()
    return math.exp(total)


def check_heldout(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> float:
    from tqdm import tqdm

    rewards = []
    failures = []
    gold = []
    for row in tqdm(rows, desc="self-check (held-out, greedy)"):
        reward, why = rollout_reward(model, tokenizer, row)
        rewards.append(reward)
        gold.append(gold_probability(model, tokenizer, row))
        if reward < 1.0:
            failures.append(f"  {row['expected_city']!r}: {why}")
    mean = sum(rewards) / len(rewards)
    print(
        f"self-check on {len(rows)} held-out rows: greedy reward {mean:.2f}, "
        f"P(reference turns at T=1) {sum(gold) / len(gold):.2f}"
    )
    print("\n".join(failures[:20]))
    return mean
