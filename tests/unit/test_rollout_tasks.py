"""The rollouts a task file expands into, with NeMo Gym's rules (nemo_gym/rollout_collection.py,
_preprocess_rows_from_config): which rows, which agent, which indices, in which order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from ngym.config.errors import ConfigError
from ngym.rollouts.prompt import Prompt
from ngym.rollouts.tasks import TaskSource, check_tasks, iter_tasks, unused_repeat_entries


def row(name: str, **extra: Any) -> dict[str, Any]:
    return {"responses_create_params": {"input": name}, "name": name, **extra}


def write(tmp_path: Path, *rows: dict[str, Any] | str) -> Path:
    path = tmp_path / "in.jsonl"
    lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def keys(source: TaskSource) -> list[tuple[int, int, str]]:
    return [(t.task_index, t.rollout_index, t.row["name"]) for t in iter_tasks(source)]


def test_limit_takes_the_first_rows_and_never_reuses_them(tmp_path: Path) -> None:
    path = write(tmp_path, row("a"), "", row("b"), row("c"))
    assert check_tasks(TaskSource(path, limit=10, agent_name="x")).rollouts == 3
    assert [k[2] for k in keys(TaskSource(path, limit=2, agent_name="x"))] == ["a", "b"]
    # NeMo Gym reads +limit=0 as no limit.
    assert check_tasks(TaskSource(path, limit=0, agent_name="x")).rollouts == 3


def test_repeats_are_grouped_and_indices_are_nemo_gyms(tmp_path: Path) -> None:
    path = write(tmp_path, row("a"), row("b"))
    assert keys(TaskSource(path, agent_name="x", num_repeats=2)) == [(0, 0, "a"), (0, 1, "a"), (1, 0, "b"), (1, 1, "b")]
    task = next(iter_tasks(TaskSource(path, agent_name="x")))
    assert task.row["_ng_task_index"] == 0 and task.row["_ng_rollout_index"] == 0
    assert task.row["agent_ref"] == {"type": "responses_api_agents", "name": "x"}


def test_identical_lines_share_a_task_and_own_indices_are_kept(tmp_path: Path) -> None:
    """NeMo Gym keys a task by the line's text; a row's own _ng_task_index wins and takes no new index."""
    same = orjson.dumps(row("a")).decode()
    path = write(tmp_path, same, row("b"), same, row("c", _ng_task_index=40), row("d"))
    assert keys(TaskSource(path, agent_name="x", num_repeats=2)) == [
        (0, 0, "a"), (0, 1, "a"), (1, 0, "b"), (1, 1, "b"), (0, 2, "a"), (0, 3, "a"),
        (40, 0, "c"), (40, 1, "c"), (2, 0, "d"), (2, 1, "d"),
    ]  # fmt: skip
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(same.encode() + b"\r\n" + same.encode() + b"\n")
    assert keys(TaskSource(crlf, agent_name="x")) == [(0, 0, "a"), (0, 1, "a")]


def test_agent_ref_picks_the_agent_and_agent_name_fills_the_rest(tmp_path: Path) -> None:
    ref = {"type": "responses_api_agents", "name": "math"}
    path = write(tmp_path, row("a", agent_ref=ref), row("b"), row("c", agent_ref={"name": "code"}))
    tasks = list(iter_tasks(TaskSource(path, agent_name="weather")))
    assert [t.agent for t in tasks] == ["math", "weather", "code"]
    assert tasks[0].row["agent_ref"] == ref and tasks[2].row["agent_ref"] == {"name": "code"}
    check = check_tasks(TaskSource(path, agent_name="weather"))
    assert {name: (use.first_line, use.from_row) for name, use in check.agents.items()} == {
        "math": (1, True), "weather": (2, False), "code": (3, True),
    }  # fmt: skip


def test_rows_without_an_agent_are_listed_by_line(tmp_path: Path) -> None:
    path = write(tmp_path, row("a"), row("b", agent_ref={"name": "m"}), row("c"))
    with pytest.raises(ConfigError, match=r"in\.jsonl: no agent for the rows on lines 1, 3: give \+agent_name"):
        check_tasks(TaskSource(path))


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"type": "resources_servers", "name": "m"}, r"in\.jsonl:1: agent_ref\.type must be 'responses_api_agents'"),
        ({"type": "responses_api_agents"}, r"in\.jsonl:1: agent_ref must be an object with a `name`"),
        ("m", r"in\.jsonl:1: agent_ref must be an object"),
    ],
)
def test_a_malformed_agent_ref_is_named(tmp_path: Path, ref: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_tasks(TaskSource(write(tmp_path, row("a", agent_ref=ref)), agent_name="x"))


def test_num_repeats_per_agent_with_a_default(tmp_path: Path) -> None:
    path = write(tmp_path, row("a", agent_ref={"name": "m"}), row("b", agent_ref={"name": "c"}), row("d"))
    source = TaskSource(path, agent_name="w", num_repeats={"m": 3, "_default": 1, "typo": 2})
    expected = [("m", 0), ("m", 1), ("m", 2), ("c", 0), ("w", 0)]
    assert [(t.agent, t.rollout_index) for t in iter_tasks(source)] == expected
    check = check_tasks(source)
    assert check.rollouts == 5
    assert unused_repeat_entries(source, check) == ["typo"]
    with pytest.raises(ConfigError, match=r"no entry for the agents 'c' \(first on line 2\), 'w' \(first on line 3\)"):
        check_tasks(TaskSource(path, agent_name="w", num_repeats={"m": 3}))


def test_seed_per_rollout_goes_into_metadata_extra_body(tmp_path: Path) -> None:
    params = {"input": "a", "metadata": {"extra_body": '{"top_k": 5}', "other": "kept"}}
    path = write(tmp_path, {"responses_create_params": params, "name": "a"}, row("b"))
    tasks = list(iter_tasks(TaskSource(path, agent_name="x", num_repeats=2, add_seed=True)))
    metadata = [t.row["responses_create_params"]["metadata"] for t in tasks]
    assert metadata[1] == {"extra_body": json.dumps({"top_k": 5, "seed": 1}), "other": "kept"}
    assert [m["extra_body"] for m in metadata[2:]] == ['{"seed": 0}', '{"seed": 1}']
    bad = write(tmp_path, {"responses_create_params": {"input": "a", "metadata": {"extra_body": "{no"}}})
    with pytest.raises(ConfigError, match=r"in\.jsonl:1: responses_create_params\.metadata\.extra_body must be"):
        check_tasks(TaskSource(bad, agent_name="x", add_seed=True))


def test_responses_create_params_override_is_merged_into_each_row(tmp_path: Path) -> None:
    path = write(tmp_path, row("a"))
    (task,) = iter_tasks(TaskSource(path, agent_name="x", params_override={"temperature": 0.0}))
    assert task.row["responses_create_params"] == {"input": "a", "temperature": 0.0}


def test_prompt_config_builds_the_input_from_row_fields(tmp_path: Path) -> None:
    prompt_file = tmp_path / "prompt.yaml"
    prompt_file.write_text("system: 'You answer {{briefly}}.'\nuser: 'Question: {question} ({meta[level]})'\n")
    prompt = Prompt.load(prompt_file)
    tools = [{"type": "function", "name": "t"}]
    path = write(tmp_path, {"question": "why?", "meta": {"level": 2}, "responses_create_params": {"tools": tools}},
                 {"question": "how?", "meta": {"level": 1}})  # fmt: skip
    first, second = iter_tasks(TaskSource(path, agent_name="x", prompt=prompt))
    assert first.row["responses_create_params"] == {
        "tools": tools,
        "input": [{"role": "system", "content": "You answer {briefly}."},
                  {"role": "user", "content": "Question: why? (2)"}],
    }  # fmt: skip
    assert second.row["responses_create_params"]["input"][1]["content"] == "Question: how? (1)"


def test_prompt_config_errors_name_the_file_the_line_and_the_field(tmp_path: Path) -> None:
    prompt_file = tmp_path / "prompt.yaml"
    prompt_file.write_text("user: 'Q: {question}'\n")
    prompt = Prompt.load(prompt_file)
    has_input = write(tmp_path, {"question": "a"}, row("b"))
    with pytest.raises(ConfigError, match=r"in\.jsonl:2: the row has responses_create_params\.input and "):
        check_tasks(TaskSource(has_input, agent_name="x", prompt=prompt))
    missing = write(tmp_path, {"other": "a"})
    with pytest.raises(ConfigError, match=r"in\.jsonl:1: the `user` template of .*prompt\.yaml uses field 'question'"):
        check_tasks(TaskSource(missing, agent_name="x", prompt=prompt))
    prompt_file.write_text("user: x\nsytem: y\n")
    with pytest.raises(ConfigError, match=r"sytem: unknown key \(did you mean 'system'\?\)"):
        Prompt.load(prompt_file)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"in\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"in\.jsonl:2: a row must be a JSON object"),
        ('{"input": "x"}', r"in\.jsonl:2: the row has no 'responses_create_params' object"),
        ('{"responses_create_params": {}, "_ng_task_index": "7"}', r"in\.jsonl:2: _ng_task_index must be a whole"),
    ],
)
def test_bad_input_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_tasks(TaskSource(write(tmp_path, row("a"), line), agent_name="x"))


def test_missing_or_empty_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="input file not found"):
        check_tasks(TaskSource(tmp_path / "nope.jsonl", agent_name="x"))
    with pytest.raises(ConfigError, match="no task rows"):
        check_tasks(TaskSource(write(tmp_path, ""), agent_name="x"))


def test_check_counts_the_rollouts_an_output_already_holds(tmp_path: Path) -> None:
    path = write(tmp_path, row("a"), row("b"))
    check = check_tasks(TaskSource(path, agent_name="x", num_repeats=2), done={(0, 1), (1, 0), (5, 0)})
    assert (check.rollouts, check.already_done) == (4, 2)
