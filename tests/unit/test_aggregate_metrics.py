"""After collecting, each agent's environment gets its rows at /aggregate_metrics and the answers are written as
NeMo Gym writes them (`<stem>_aggregate_metrics.json`, one entry per agent); a verify answer that NeMo Gym marks
as a failure (`_ng_failure_class`, e.g. a judge that could not be reached) is a `verify` failure, never a reward."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ngym.http.app import json_response, serve_in_background
from ngym.rollouts.aggregate import (
    AggregationError,
    Environment,
    aggregate,
    aggregate_metrics_path,
    environments_of_agents,
)
from ngym.rollouts.collect import CollectPlan, collect
from ngym.rollouts.output import failures_path, summary_path
from ngym.rollouts.tasks import TaskSource

ANSWER = {
    "group_level_metrics": [{"_ng_task_index": 0, "mean/reward": 1.0}],
    "agent_metrics": {"mean/reward": 0.5},
    "key_metrics": {"mean/reward": 0.5},
    "perf_summary": None,
}


def row(agent: str, task: int, rollout: int, reward: float) -> dict[str, Any]:
    return {
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        "agent_ref": {"name": agent},
        "reward": reward,
        "responses_create_params": {"input": "long prompt"},
        "response": {"output": ["long answer"], "usage": {"output_tokens": 3}, "incomplete_details": None},
    }


def environment_app(seen: list[Any]) -> Starlette:
    async def metrics(request: Request) -> Response:
        seen.append(orjson.loads(await request.body()))
        return json_response(ANSWER)

    return Starlette(routes=[Route("/aggregate_metrics", metrics, methods=["POST"])])


def test_file_name_is_nemo_gyms() -> None:
    assert aggregate_metrics_path(Path("results/r.jsonl")) == Path("results/r_aggregate_metrics.json")


def test_each_agents_resources_server_is_found_from_the_run() -> None:
    config = {
        "mcqa": {"resources_servers": {"mcqa": {"entrypoint": "app.py"}}},
        "mcqa_simple_agent": {"responses_api_agents": {"simple_agent": {
            "entrypoint": "app.py", "resources_server": {"type": "resources_servers", "name": "mcqa"}}}},
        "policy_model": {"responses_api_models": {"vllm_model": {"entrypoint": "app.py"}}},
    }  # fmt: skip
    servers = [{"name": "mcqa", "url": "http://127.0.0.1:1"}, {"name": "mcqa_simple_agent", "url": "http://x"}]
    assert environments_of_agents(config, servers) == {"mcqa_simple_agent": Environment("mcqa", "http://127.0.0.1:1")}


async def test_each_agents_rows_go_to_its_environment_and_the_file_is_written(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    rows = [row("a", 1, 0, 1.0), row("b", 0, 0, 0.0), row("a", 0, 1, 0.0), row("a", 0, 0, 1.0)]
    output.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    seen_a: list[Any] = []
    async with serve_in_background(environment_app(seen_a)) as url_a:
        async with serve_in_background(Starlette()) as url_b:  # an ngym server: no such route (404)
            path, entries = await aggregate(output, {"a": Environment("env_a", url_a), "b": Environment("b", url_b)})
    assert path == tmp_path / "out_aggregate_metrics.json"
    assert orjson.loads(path.read_bytes()) == entries
    assert entries == [
        {
            "agent_ref": {"name": "a"},
            "agent_metrics": ANSWER["agent_metrics"],
            "key_metrics": ANSWER["key_metrics"],
            "group_level_metrics": ANSWER["group_level_metrics"],
            "repeat_level_metrics": [],
        }
    ]
    (body,) = seen_a
    sent = body["verify_responses"]
    assert [(r["_ng_task_index"], r["_ng_rollout_index"]) for r in sent] == [(0, 0), (0, 1), (1, 0)]
    assert all("responses_create_params" not in r for r in sent)
    assert all(r["response"] == {"usage": {"output_tokens": 3}} for r in sent)


async def test_no_environment_serves_metrics_no_file(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_bytes(orjson.dumps(row("b", 0, 0, 1.0)) + b"\n")
    async with serve_in_background(Starlette()) as url:
        assert await aggregate(output, {"b": Environment("b", url)}) == (None, [])
    assert not aggregate_metrics_path(output).exists()


async def test_an_environment_that_fails_is_named(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_bytes(orjson.dumps(row("a", 0, 0, 1.0)) + b"\n")

    async def broken(_request: Request) -> Response:
        return Response(b"boom", status_code=500)

    app = Starlette(routes=[Route("/aggregate_metrics", broken, methods=["POST"])])
    async with serve_in_background(app) as url:
        with pytest.raises(AggregationError, match=r"env_a \(agent a\): /aggregate_metrics answered 500: boom"):
            await aggregate(output, {"a": Environment("env_a", url)})
    assert not aggregate_metrics_path(output).exists()


# What NeMo Gym's judge_failsafe answers when a judge call fails, as the agent passes it on.
JUDGE_FAILED = {
    "reward": 0.0,
    "mask_sample": True,
    "failure_kind": "judge_failed",
    "failure_reason": "ClientConnectorError: judge unreachable",
    "_ng_failure_class": "judge_failed",
    "_ng_failure_judge_error": "ClientConnectorError: judge unreachable",
}


async def test_a_judge_failure_is_a_verify_failure_not_a_reward(tmp_path: Path) -> None:
    async def run(request: Request) -> Response:
        body = orjson.loads(await request.body())
        judged = body["responses_create_params"]["input"] == "judged"
        return json_response(JUDGE_FAILED if judged else {"reward": 1.0})

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"".join(orjson.dumps({"responses_create_params": {"input": text}}) + b"\n"
                               for text in ("fine", "judged")))  # fmt: skip
    output = tmp_path / "out.jsonl"
    async with serve_in_background(Starlette(routes=[Route("/run", run, methods=["POST"])])) as url:
        summary = await collect(
            CollectPlan({"agent": url}, TaskSource(tasks, agent_name="agent"), output), io.StringIO()
        )
    assert (summary.finished, summary.failed, summary.missing) == (1, 1, 0)
    written = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert [r["reward"] for r in written] == [1.0]
    (failure,) = [orjson.loads(line) for line in failures_path(output).read_bytes().splitlines()]
    assert failure["class"] == "verify" and failure["_ng_task_index"] == 1
    assert failure["_ng_failure_class"] == "judge_failed"
    assert "judge unreachable" in failure["error"]
    assert orjson.loads(summary_path(output).read_bytes())["failed_by_class"] == {"verify": 1}
