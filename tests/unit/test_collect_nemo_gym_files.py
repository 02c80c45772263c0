"""Rollout files cross over both ways: NeMo Gym's feed ngym's resume and summary, and ngym's rows have the
shape NeMo Gym's readers (resume, /aggregate_metrics grouping, shard merging, trainers' grouping) rely on."""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ngym.config.errors import ConfigError
from ngym.http.app import json_response, serve_in_background
from ngym.rollouts.collect import CollectPlan, collect
from ngym.rollouts.tasks import TaskSource

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "resources_servers" / "simple_weather" / "data" / "example.jsonl"
NEMO_GYM = ROOT / "tests" / "data" / "nemo_gym"
AGENT = "simple_weather_simple_agent"


@contextlib.asynccontextmanager
async def scripted_agent(reward: float = 1.0) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An agent whose /run answers as simple_agent does (the row echoed, a response, a reward)."""
    seen: list[dict[str, Any]] = []

    async def run(request: Request) -> Response:
        row = orjson.loads(await request.body())
        seen.append(row)
        return json_response({**row, "response": {"object": "response", "output": []}, "reward": reward})

    async with serve_in_background(Starlette(routes=[Route("/run", run, methods=["POST"])])) as url:
        yield url, seen


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().split(b"\n") if line]


def nemo_gym_reader(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, int]]]:
    """What NeMo Gym's readers take from a rollout file, as strictly as they take it: the (task, rollout) key
    by plain indexing (resume, shard merging sorts by it), the agent by `agent_ref.name` (/aggregate_metrics is
    asked per agent), `reward` and `response.usage`-bearing `response` objects; keys unique."""
    by_agent: dict[str, list[tuple[int, int]]] = {}
    for row in rows:
        key = (row["_ng_task_index"], row["_ng_rollout_index"])
        assert all(isinstance(k, int) for k in key)
        assert isinstance(row["reward"], float | int) and isinstance(row["response"], dict)
        assert isinstance(row["responses_create_params"], dict)
        by_agent.setdefault(row["agent_ref"]["name"], []).append(key)
    keys = [key for group in by_agent.values() for key in group]
    assert len(keys) == len(set(keys)), "a (task, rollout) twice"
    return {agent: sorted(keys) for agent, keys in by_agent.items()}


async def test_a_nemo_gym_output_is_resumed_and_summarised(tmp_path: Path) -> None:
    output = tmp_path / "rollouts.jsonl"
    shutil.copy(NEMO_GYM / "rollouts.jsonl", output)
    source = TaskSource(EXAMPLE, limit=2, agent_name=AGENT, num_repeats=2)
    async with scripted_agent(reward=1.0) as (url, seen):
        log = io.StringIO()
        summary = await collect(CollectPlan({AGENT: url}, source, output), log)
    assert [(r["_ng_task_index"], r["_ng_rollout_index"]) for r in seen] == [(1, 1)], "only the missing rollout"
    assert "resuming: 3 rollouts already in" in log.getvalue()
    assert (summary.expected, summary.already_done, summary.finished, summary.missing) == (4, 3, 1, 0)
    reward = summary.as_dict(1.0)["fields"]["reward"]
    assert (reward["count"], reward["mean"]) == (4, 0.75)  # NeMo Gym's three rows (1, 1, 0) and the new one
    assert nemo_gym_reader(read_rows(output)) == {AGENT: [(0, 0), (0, 1), (1, 0), (1, 1)]}


async def test_nemo_gym_materialized_inputs_are_the_rows_ngym_sends(tmp_path: Path) -> None:
    """The same command sends each rollout the row NeMo Gym materialized for it (the agent_ref aside:
    ngym also names the server type)."""
    source = TaskSource(EXAMPLE, limit=2, agent_name=AGENT, num_repeats=2)
    async with scripted_agent() as (url, seen):
        plan = CollectPlan({AGENT: url}, source, tmp_path / "out.jsonl", num_samples_in_parallel=1)
        await collect(plan, io.StringIO())
    expected = read_rows(NEMO_GYM / "rollouts_materialized_inputs.jsonl")
    for row in seen:
        assert row.pop("agent_ref") == {"type": "responses_api_agents", "name": AGENT}
    for row in expected:
        assert row.pop("agent_ref") == {"name": AGENT}
    assert seen == expected


def mixed_input(tmp_path: Path) -> Path:
    """Rows of example.jsonl for two agents: by agent_ref, and by +agent_name for rows without one."""
    rows = [orjson.loads(line) for line in EXAMPLE.read_bytes().splitlines() if line][:6]
    for index in (1, 3, 4):
        rows[index]["agent_ref"] = {"type": "responses_api_agents", "name": "second"}
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


async def test_one_run_feeds_two_agents_and_each_row_carries_nemo_gyms_keys(tmp_path: Path) -> None:
    output = tmp_path / "out" / "rollouts.jsonl"
    source = TaskSource(mixed_input(tmp_path), agent_name="first", num_repeats={"first": 1, "second": 2})
    async with scripted_agent() as (first, to_first), scripted_agent() as (second, to_second):
        summary = await collect(CollectPlan({"first": first, "second": second}, source, output), io.StringIO())
    assert (summary.expected, summary.finished, summary.failed) == (9, 9, 0)
    assert sorted(r["_ng_task_index"] for r in to_first) == [0, 2, 5]
    assert sorted((r["_ng_task_index"], r["_ng_rollout_index"]) for r in to_second) == [
        (1, 0), (1, 1), (3, 0), (3, 1), (4, 0), (4, 1),
    ]  # fmt: skip
    assert nemo_gym_reader(read_rows(output)) == {
        "first": [(0, 0), (2, 0), (5, 0)],
        "second": [(1, 0), (1, 1), (3, 0), (3, 1), (4, 0), (4, 1)],
    }


async def test_a_row_for_an_agent_that_is_not_running_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    output = tmp_path / "rollouts.jsonl"
    source = TaskSource(mixed_input(tmp_path), agent_name="first")
    async with scripted_agent() as (first, seen):
        with pytest.raises(ConfigError, match=r"mixed\.jsonl:2: its agent_ref names the agent 'second', which is not "
                                              r"running in ng_run \(its agents: first, third\)"):  # fmt: skip
            await collect(CollectPlan({"first": first, "third": first}, source, output), io.StringIO())
        with pytest.raises(ConfigError, match=r"mixed\.jsonl:1: \+agent_name gives it the agent 'first'"):
            await collect(CollectPlan({"second": first}, source, output), io.StringIO())
    assert seen == [] and not output.exists()


async def test_an_output_of_another_run_is_not_resumed(tmp_path: Path) -> None:
    output = tmp_path / "rollouts.jsonl"
    shutil.copy(NEMO_GYM / "rollouts.jsonl", output)
    source = TaskSource(EXAMPLE, limit=1, agent_name=AGENT, num_repeats=2)
    async with scripted_agent() as (url, seen):
        with pytest.raises(ConfigError, match=r"rollouts\.jsonl holds 1 rollouts that are not in this run"):
            await collect(CollectPlan({AGENT: url}, source, output), io.StringIO())
        summary = await collect(CollectPlan({AGENT: url}, source, output, overwrite=True), io.StringIO())
    assert (summary.already_done, summary.finished) == (0, 2) and len(seen) == 2
