"""One rollout as the page shows it: what to pin at the top, the task's input, then each model turn.

Long strings are cut (with the path to ask for them whole) and token arrays are replaced by their lengths:
the token view asks for those, so a rollout with a long context does not weigh on the conversation.
"""

from __future__ import annotations

from typing import Any

import orjson

from ngym.rollouts.keys import AGENT_REF, PARAMS, ROLLOUT_INDEX, TASK_INDEX
from ngym.viewer.rows import STRUCTURAL_KEYS, TOKEN_KEYS, is_model_item, message_text, output_items, turn_ranges

TEXT_LIMIT = 20_000
Json = dict[str, Any]


def text(value: str, path: str, limit: int = TEXT_LIMIT) -> Json:
    if len(value) <= limit:
        return {"text": value}
    return {"text": value[:limit], "cut": True, "length": len(value), "path": path}


def pretty(value: Any, path: str) -> Json:
    """JSON shown indented; a string that holds JSON (tool arguments, tool outputs) is shown parsed."""
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {**text(value, path), "json": False}
        if not isinstance(parsed, dict | list):
            return {**text(value, path), "json": False}
        value = parsed
    try:
        shown = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        shown = str(value)
    return {**text(shown, path), "json": True}


def _content_text(item: Json, path: str) -> Json:
    content = item.get("content")
    if isinstance(content, str):
        return text(content, f"{path}.content")
    joined = message_text(item)
    if isinstance(content, list) and len(content) == 1:
        return text(joined, f"{path}.content.0.text")
    return text(joined, f"{path}.content")


def _reasoning_text(item: Json) -> str:
    parts = []
    for key in ("summary", "content"):
        for part in item.get(key) or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    return "\n\n".join(parts)


def item_view(item: Json, path: str) -> Json:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "reasoning":
        return {"kind": "reasoning", **text(_reasoning_text(item), f"{path}.summary")}
    if kind == "message":
        return {"kind": "message", "role": item.get("role", "assistant"), **_content_text(item, path)}
    if kind == "function_call":
        return {
            "kind": "tool_call",
            "name": item.get("name"),
            "call_id": item.get("call_id"),
            "arguments": pretty(item.get("arguments", ""), f"{path}.arguments"),
        }
    if kind == "function_call_output":
        return {
            "kind": "tool_output",
            "call_id": item.get("call_id"),
            "output": pretty(item.get("output", ""), f"{path}.output"),
        }
    shown = {key: value for key, value in item.items() if key not in TOKEN_KEYS}
    return {"kind": "other", "type": kind, "body": pretty(shown, path)}


def _input_messages(row: Json) -> list[Json]:
    params = row.get(PARAMS)
    prompt = params.get("input") if isinstance(params, dict) else None
    if isinstance(prompt, str):
        return [{"kind": "message", "role": "user", **text(prompt, f"{PARAMS}.input")}]
    if not isinstance(prompt, list):
        return []
    return [item_view(item, f"{PARAMS}.input.{n}") for n, item in enumerate(prompt) if isinstance(item, dict)]


def _turns(row: Json) -> tuple[list[Json], list[Json]]:
    """Model turns, each with the tool outputs that answer it; and items before the first turn."""
    items = output_items(row)
    ranges = turn_ranges(items)
    turns: list[Json] = []
    before: list[Json] = []
    for position, item in enumerate(items):
        view = item_view(item, f"response.output.{position}")
        owner = next((n for n, (start, _end) in reversed(list(enumerate(ranges))) if start <= position), None)
        if owner is None:
            before.append(view)
            continue
        while len(turns) <= owner:
            turns.append({"turn": len(turns) + 1, "items": [], "tool_outputs": []})
        end = ranges[owner][1]
        turns[owner]["items" if position < end and is_model_item(item) else "tool_outputs"].append(view)
        if "generation_token_ids" in item:
            turns[owner]["tokens"] = {
                "prompt": len(item.get("prompt_token_ids") or []),
                "generation": len(item.get("generation_token_ids") or []),
            }
    return turns, before


def _fields(row: Json) -> Json:
    """The verifier's (and the task's) own top-level fields."""
    return {
        key: pretty(value, key) if isinstance(value, dict | list) else value
        for key, value in row.items()
        if key not in STRUCTURAL_KEYS and not key.startswith("_")
    }


def rollout_view(row: Json) -> Json:
    response = row.get("response") if isinstance(row.get("response"), dict) else {}
    assert isinstance(response, dict)
    params = row.get(PARAMS) if isinstance(row.get(PARAMS), dict) else {}
    assert isinstance(params, dict)
    turns, before = _turns(row)
    settings = {key: value for key, value in params.items() if key not in ("input", "tools")}
    instructions = response.get("instructions") or params.get("instructions")
    ref = row.get(AGENT_REF)
    return {
        "kind": "rollout",
        "task": row.get(TASK_INDEX),
        "rollout": row.get(ROLLOUT_INDEX),
        "agent": ref.get("name") if isinstance(ref, dict) else None,
        "reward": row.get("reward"),
        "status": response.get("status"),
        "incomplete_details": response.get("incomplete_details"),
        "error": response.get("error"),
        "model": response.get("model"),
        "usage": response.get("usage"),
        "fields": _fields(row),
        "instructions": text(instructions, "response.instructions") if isinstance(instructions, str) else None,
        "input": _input_messages(row),
        "tools": [tool.get("name") for tool in params.get("tools") or [] if isinstance(tool, dict)],
        "tools_json": pretty(params.get("tools"), f"{PARAMS}.tools") if params.get("tools") else None,
        "settings": pretty(settings, PARAMS) if settings else None,
        "before_turns": before,
        "turns": turns,
    }


def failure_view(record: Json, task_row: Json | None, task_row_id: str | None) -> Json:
    """A failed rollout: its record pinned, and the task's input when another rollout of the task has it."""
    ref = record.get(AGENT_REF)
    view: Json = {
        "kind": "failure",
        "task": record.get(TASK_INDEX),
        "rollout": record.get(ROLLOUT_INDEX),
        "agent": ref.get("name") if isinstance(ref, dict) else None,
        "class": record.get("class"),
        "http_status": record.get("status"),
        "error": text(str(record.get("error") or ""), "error"),
        "input": _input_messages(task_row) if task_row is not None else [],
        "input_from": task_row_id,
    }
    return view


def value_at(row: Any, path: str) -> Any:
    """The value at a dotted path (`response.output.3.arguments`); KeyError naming the first missing part."""
    current = row
    for part in path.split(".") if path else []:
        if isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise KeyError(part)
    return current
