"""The malformed-body corpus (testkit.malformed) holds what the end-to-end boundary test claims it sends."""

from __future__ import annotations

import orjson
import pytest

from testkit.malformed import SAMPLES, corpus, json_type, show_path, walk

VALID = {"params": {"input": [{"role": "user", "content": "hi"}], "max": 8, "stream": False}, "city": "sf"}


def parsed(body: bytes) -> object:
    return orjson.loads(body)


def test_the_same_body_gives_the_same_corpus_in_the_same_order() -> None:
    assert corpus(VALID) == corpus(dict(VALID))
    names = [case.name for case in corpus(VALID)]
    assert len(names) == len(set(names)), "every case is named once"


def test_every_value_is_replaced_by_every_other_json_type() -> None:
    bodies = {case.name: case.body for case in corpus(VALID)}
    for path, value in walk(VALID):
        own = json_type(value)
        for kind, sample in SAMPLES.items():
            name = f"{show_path(path)}: {own} -> {kind}"
            if kind == own:
                assert name not in bodies
                continue
            node = parsed(bodies[name])
            for part in path:
                node = node[part]  # type: ignore[index]
            assert node == sample, name


def test_every_key_is_deleted_at_every_depth() -> None:
    bodies = {case.name: case.body for case in corpus(VALID)}
    assert "city" not in parsed(bodies["city: deleted"])  # type: ignore[operator]
    deleted = parsed(bodies["params.input[0].role: deleted"])
    assert deleted["params"]["input"][0] == {"content": "hi"}  # type: ignore[index]
    assert not any(name.endswith("[0]: deleted") for name in bodies), "list items are not keys"


def test_bodies_that_are_not_an_object_and_bodies_that_are_not_json() -> None:
    bodies = {case.name: case.body for case in corpus(VALID)}
    assert bodies["empty body"] == b""
    assert isinstance(parsed(bodies["a JSON array instead of an object"]), list)
    assert parsed(bodies["a JSON number instead of an object"]) == 42
    for name in ("invalid JSON (cut short)", "invalid UTF-8"):
        with pytest.raises(orjson.JSONDecodeError):
            parsed(bodies[name])


def test_big_strings_and_deep_nesting() -> None:
    cases = {case.name: case.body for case in corpus(VALID, big_string_bytes=1000, deep=3000, shallow_deep=900)}
    big = parsed(cases["params.input[0].role: a 0 MB string"])
    assert big["params"]["input"][0]["role"] == "x" * 1000  # type: ignore[index]
    shallow = parsed(cases["params: lists nested 900 deep"])
    depth, node = 0, shallow["params"]  # type: ignore[index]
    while isinstance(node, list):
        depth, node = depth + 1, node[0] if node else None
    assert depth == 900
    deep = cases["city: lists nested 3000 deep"]
    assert deep.endswith(b'"city":' + b"[" * 3000 + b"]" * 3000 + b"}")
    with pytest.raises(orjson.JSONDecodeError):
        parsed(deep)  # past orjson's limit: a parser must refuse it, not recurse
