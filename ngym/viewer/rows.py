"""What the viewer's index keeps of one row: the few facts the table, the groups and the summary need.

A rollout row is NeMo Gym's: the task row, `response` (a Responses object), `reward` and the verifier's fields,
with `_ng_task_index`, `_ng_rollout_index` and `agent_ref`. A failure row (`<output>.failures.jsonl`) has the
same three keys and `class`, `status`, `error`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from ngym.config.secrets import is_secret_key
from ngym.rollouts.keys import AGENT_REF, PARAMS, ROLLOUT_INDEX, TASK_INDEX

COMPLETED, INCOMPLETE, FAILED, ERROR = 0, 1, 2, 3
STATUS_NAMES = ("completed", "incomplete", "failed", "error")
NAN = math.nan

# Numeric facts every rollout has (NaN where a row cannot say), in the table's column order.
BUILTIN_NUMBERS = ("reward", "turns", "tool_calls", "output_tokens", "output_chars", "input_tokens")
# Top-level keys that are the rollout itself, not a verifier's (or the task's) field.
STRUCTURAL_KEYS = frozenset({PARAMS, "response", AGENT_REF, TASK_INDEX, ROLLOUT_INDEX, "reward"})
MODEL_ITEMS = frozenset({"message", "function_call", "reasoning"})
TOKEN_KEYS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
LABEL_MAX_CHARS = 200  # a longer string is text, not a value to filter on


@dataclass(slots=True)
class Facts:
    task: int = -1
    rollout: int = -1
    agent: str = ""
    status: int = COMPLETED
    prompt_key: int = 0
    numbers: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def _index(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else -1


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _agent(row: dict[str, Any]) -> str:
    ref = row.get(AGENT_REF)
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) else ""


def label_of(value: Any) -> str | None:
    """The filterable form of a scalar field; None for anything else (lists, objects, long text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and len(value) <= LABEL_MAX_CHARS:
        return value
    return None


def output_items(row: dict[str, Any]) -> list[dict[str, Any]]:
    response = row.get("response")
    output = response.get("output") if isinstance(response, dict) else None
    return [item for item in output if isinstance(item, dict)] if isinstance(output, list) else []


def is_model_item(item: dict[str, Any]) -> bool:
    kind = item.get("type", "message" if "role" in item else None)
    return kind in MODEL_ITEMS and (kind != "message" or item.get("role", "assistant") == "assistant")


def turn_ranges(items: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """[start, end) of each model turn in a Response's output: a run of model items (reasoning, assistant
    message, function calls). Token data sits on a turn's last item, so an item carrying it ends its turn."""
    turns: list[tuple[int, int]] = []
    start: int | None = None
    for position, item in enumerate(items):
        if is_model_item(item):
            if start is None:
                start = position
            if "generation_token_ids" in item:
                turns.append((start, position + 1))
                start = None
        elif start is not None:
            turns.append((start, position))
            start = None
    if start is not None:
        turns.append((start, len(items)))
    return turns


def prompt_key(row: dict[str, Any]) -> int:
    """Identifies a task by its prompt, so that two files are compared on the same tasks (stable across the
    processes that index one file in parallel, unlike hash())."""
    params = row.get(PARAMS)
    prompt = params.get("input") if isinstance(params, dict) else None
    try:
        digest = hashlib.blake2b(orjson.dumps(prompt), digest_size=8).digest()
    except TypeError:
        return 0
    return int.from_bytes(digest, "little", signed=True)


def rollout_facts(row: dict[str, Any]) -> Facts:
    facts = Facts(_index(row.get(TASK_INDEX)), _index(row.get(ROLLOUT_INDEX)), _agent(row))
    facts.prompt_key = prompt_key(row)
    numbers = facts.numbers
    reward = _number(row.get("reward"))
    numbers["reward"] = NAN if reward is None else reward
    _add_fields(row, facts)
    response = row.get("response")
    if not isinstance(response, dict):
        facts.status = ERROR
        return facts
    status = response.get("status")
    if status == "incomplete":
        facts.status = INCOMPLETE
    elif response.get("error") or (status not in (None, "completed")):
        facts.status = ERROR
    turns, tool_calls, generated, chars = _scan_output(output_items(row))
    numbers["turns"], numbers["tool_calls"], numbers["output_chars"] = turns, tool_calls, chars
    # A response's usage is its last model call's (NeMo Gym's agents answer with the last response): the
    # generated IDs of every turn, when the rows carry them, are the whole rollout's.
    usage = response.get("usage")
    if generated >= 0:
        numbers["output_tokens"] = generated
    else:
        output_tokens = _number(usage.get("output_tokens")) if isinstance(usage, dict) else None
        numbers["output_tokens"] = NAN if output_tokens is None else output_tokens
    input_tokens = _number(usage.get("input_tokens")) if isinstance(usage, dict) else None
    numbers["input_tokens"] = NAN if input_tokens is None else input_tokens
    return facts


def _scan_output(items: list[dict[str, Any]]) -> tuple[float, float, float, float]:
    """Turns, tool calls, generated token IDs (-1 without token data) and characters the model wrote, in one
    pass (the index runs this on every row; turn_ranges says what a turn is)."""
    turns = tool_calls = chars = 0
    generated = -1
    in_turn = False
    for item in items:
        if not is_model_item(item):
            in_turn = False
            continue
        if not in_turn:
            turns += 1
            in_turn = True
        if item.get("type") == "function_call":
            tool_calls += 1
        chars += _output_chars(item)
        ids = item.get("generation_token_ids")
        if isinstance(ids, list):
            generated = len(ids) + max(generated, 0)
            in_turn = False  # token data ends its turn
    return float(turns), float(tool_calls), float(generated), float(chars)


def _output_chars(item: dict[str, Any]) -> int:
    kind = item.get("type", "message")
    if kind == "function_call":
        arguments = item.get("arguments")
        return len(arguments) if isinstance(arguments, str) else 0
    if kind == "reasoning":
        parts = [*(item.get("summary") or []), *(item.get("content") or [])]
        return sum(len(part.get("text") or "") for part in parts if isinstance(part, dict))
    return len(message_text(item))


def _add_fields(row: dict[str, Any], facts: Facts) -> None:
    """The verifier's (and the task's) own top-level fields: numbers to sort on, short values to filter on."""
    for key, value in row.items():
        if key in STRUCTURAL_KEYS or key.startswith("_") or is_secret_key(key):
            continue  # a secret a row holds is never shown, not even in the table
        number = _number(value)
        if number is not None:
            if key not in BUILTIN_NUMBERS:
                facts.numbers[key] = number
            continue
        label = label_of(value)
        if label is not None:
            facts.labels[key] = label


def failure_facts(row: dict[str, Any]) -> Facts:
    facts = Facts(_index(row.get(TASK_INDEX)), _index(row.get(ROLLOUT_INDEX)), _agent(row), FAILED)
    failure_class = row.get("class")
    facts.labels["class"] = failure_class if isinstance(failure_class, str) else "unknown"
    http_status = _number(row.get("status"))
    if http_status is not None:
        facts.numbers["http_status"] = http_status
    return facts


def message_text(message: dict[str, Any]) -> str:
    """The text of an input or output message, whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return "".join(part for part in parts if isinstance(part, str))
    return ""


def last_user_text(row: dict[str, Any]) -> str:
    params = row.get(PARAMS)
    prompt = params.get("input") if isinstance(params, dict) else None
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, dict) and message.get("role") == "user":
                return message_text(message)
    return ""


def final_text(row: dict[str, Any]) -> str:
    """What the rollout ended with: its last assistant text, else its last tool call."""
    for item in reversed(output_items(row)):
        if item.get("type") == "message" and item.get("role", "assistant") == "assistant":
            text = message_text(item)
            if text:
                return text
        if item.get("type") == "function_call":
            return f"{item.get('name')}({item.get('arguments', '')})"
    return ""


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
