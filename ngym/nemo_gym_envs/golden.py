"""Golden replay cases of a NeMo Gym environment: its `data/example.jsonl` rows joined with the rollouts recorded
in `data/example_rollouts.jsonl`. Each case is the `/verify` request NeMo Gym sent (the example row's fields,
the recorded `responses_create_params` and `response`) and the reward it recorded.

Recorded rows carry every field of `responses_create_params` NeMo Gym filled in (`background: null`, ...), so
rows join on what the model was asked: the role, text and image URLs of each input message; rows that ask the same thing
(and differ in other fields) join on the row index NeMo Gym recorded (`_ng_task_index`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class GoldenCase:
    index: int  # the row of example.jsonl
    request: dict[str, Any]
    reward: float


def golden_cases(data: Path) -> list[GoldenCase]:
    """Every example row with a recorded rollout and reward (the first recorded one when a row has several)."""
    examples, rollouts = data / "example.jsonl", data / "example_rollouts.jsonl"
    if not examples.is_file() or not rollouts.is_file():
        return []
    recorded: dict[bytes, list[dict[str, Any]]] = {}
    for row in read_rows(rollouts):
        if isinstance(row.get("response"), dict) and isinstance(row.get("reward"), int | float):
            recorded.setdefault(input_key(row), []).append(row)
    rows = read_rows(examples)
    keys = [input_key(row) for row in rows]
    cases = []
    for index, row in enumerate(rows):
        found = _recorded_for(recorded.get(keys[index], []), index, shared=keys.count(keys[index]) > 1)
        if found is None:
            continue
        request = {**row, "responses_create_params": found["responses_create_params"], "response": found["response"]}
        cases.append(GoldenCase(index, request, float(found["reward"])))
    return cases


def _recorded_for(found: list[dict[str, Any]], index: int, shared: bool) -> dict[str, Any] | None:
    """The first rollout recorded for a row's input; when several rows ask the same (rows that differ only in
    other fields, such as a seed), the one NeMo Gym recorded for this row (`_ng_task_index`), if any."""
    if shared:
        for row in found:
            if row.get("_ng_task_index") == index:
                return row
    return found[0] if found else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            rows.append(value)
    return rows


def input_key(row: dict[str, Any]) -> bytes:
    """The role and content of each input message of a row's responses_create_params: text and image URLs (rows
    that differ only in their image must not join one another's rollouts)."""
    params = row.get("responses_create_params")
    given = params.get("input") if isinstance(params, dict) else None
    if isinstance(given, str):
        return orjson.dumps([["user", given]])
    messages = []
    for item in given if isinstance(given, list) else []:
        if isinstance(item, dict) and "role" in item:
            messages.append([item["role"], _text(item.get("content"))])
    return orjson.dumps(messages)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) + str(part.get("image_url") or "") for part in content
                       if isinstance(part, dict))  # fmt: skip
    return ""
