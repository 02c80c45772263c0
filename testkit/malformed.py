"""A deterministic corpus of malformed request bodies, derived from one valid body, for boundary tests.

Cases, each a name (what was done, and where) and the raw bytes to send:
- bodies that are not a JSON object: invalid JSON, empty, invalid UTF-8, a JSON array / number / string / null;
- every value of the valid body (leaves, objects and lists alike) replaced by a value of each other JSON type;
- every key deleted, at every depth;
- a 2 MB string in place of each of the first ``big_string_slots`` strings (in document order);
- nesting ``deep`` levels deep (past parsers' limits) and ``shallow_deep`` levels (just inside orjson's 1024) in
  place of each top-level value.

Same valid body, same corpus, in the same order: a failing case can be named and re-sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

BIG_STRING_BYTES = 2 * 1024 * 1024
DEEP = 5000
SHALLOW_DEEP = 1000  # orjson refuses documents nested more than 1024 levels
Path = tuple[str | int, ...]

# One sample of each JSON type; a value is replaced by every sample of another type than its own.
SAMPLES: dict[str, Any] = {
    "null": None,
    "bool": True,
    "number": 7.5,
    "string": "not-what-you-expected",
    "list": [1, "two", None],
    "object": {"unexpected": 1},
}
_MARKER = "\u0000ngym-malformed-slot\u0000"
_MARKER_JSON = orjson.dumps(_MARKER)

RAW_CASES: tuple[tuple[str, bytes], ...] = (
    ("invalid JSON (cut short)", b'{"input": "hi", '),
    ("invalid JSON (single quotes)", b"{'input': 'hi'}"),
    ("invalid JSON (trailing garbage)", b'{"input": "hi"} x'),
    ("invalid UTF-8", b'{"input": "\xff\xfe"}'),
    ("empty body", b""),
    ("whitespace body", b"  \n"),
    ("a JSON array instead of an object", b'[{"input": "hi"}]'),
    ("a JSON number instead of an object", b"42"),
    ("a JSON string instead of an object", b'"hi"'),
    ("JSON null instead of an object", b"null"),
    ("JSON true instead of an object", b"true"),
)


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def show_path(path: Path) -> str:
    """`a.b[0].c`, as error messages name fields."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(body)"


def walk(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every value under `value` (not `value` itself), parents before children, in document order."""
    children: list[tuple[str | int, Any]]
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    else:
        return
    for key, child in children:
        yield (*path, key), child
        yield from walk(child, (*path, key))


def replaced(value: Any, path: Path, new: Any) -> Any:
    """A copy of `value` with the value at `path` replaced by `new`."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        assert isinstance(head, str)
        return {k: (replaced(v, rest, new) if k == head else v) for k, v in value.items()}
    assert isinstance(value, list) and isinstance(head, int)
    return [replaced(v, rest, new) if i == head else v for i, v in enumerate(value)]


def deleted(value: Any, path: Path) -> Any:
    """A copy of `value` without the object key at `path`."""
    parent_path, key = path[:-1], path[-1]
    parent = value
    for part in parent_path:
        parent = parent[part]
    assert isinstance(parent, dict) and isinstance(key, str)
    return replaced(value, parent_path, {k: v for k, v in parent.items() if k != key})


def with_raw(value: Any, path: Path, raw: bytes) -> bytes:
    """`value` serialised with the raw JSON text `raw` at `path` (for documents orjson would not write)."""
    return orjson.dumps(replaced(value, path, _MARKER)).replace(_MARKER_JSON, raw, 1)


def nested_lists(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def corpus(
    valid: dict[str, Any],
    *,
    big_string_slots: int = 4,
    big_string_bytes: int = BIG_STRING_BYTES,
    deep: int = DEEP,
    shallow_deep: int = SHALLOW_DEEP,
) -> list[Case]:
    """The malformed bodies derived from `valid` (which is not itself included)."""
    cases = [Case(name, body) for name, body in RAW_CASES]
    values = list(walk(valid))
    for path, value in values:
        own = json_type(value)
        for kind, sample in SAMPLES.items():
            if kind != own:
                cases.append(Case(f"{show_path(path)}: {own} -> {kind}", orjson.dumps(replaced(valid, path, sample))))
    for path, _value in values:
        if isinstance(path[-1], str):
            cases.append(Case(f"{show_path(path)}: deleted", orjson.dumps(deleted(valid, path))))
    big = "x" * big_string_bytes
    strings = [path for path, value in values if isinstance(value, str)]
    for path in strings[:big_string_slots]:
        name = f"{show_path(path)}: a {big_string_bytes // (1024 * 1024)} MB string"
        cases.append(Case(name, orjson.dumps(replaced(valid, path, big))))
    for key in valid:
        for depth in (shallow_deep, deep):
            cases.append(Case(f"{key}: lists nested {depth} deep", with_raw(valid, (key,), nested_lists(depth))))
    return cases
