"""ng_collect_rollouts counts every rollout: an agent answer aiohttp cannot read used to escape as
ClientResponseError, ending the run with finished 0, failed 0, missing 3 and exit status 0."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ngym.http.app import error_response, serve_in_background
from ngym.rollouts.collect import CollectPlan, StopSignals, collect
from ngym.rollouts.output import failures_path
from ngym.rollouts.tasks import TaskSource

ROW = {"responses_create_params": {"input": "hi"}}


async def broken_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}")
    await writer.drain()
    writer.close()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(65536)
    writer.transport.abort()  # RST instead of an answer


@pytest.fixture
async def agent(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    server = await asyncio.start_server(request.param, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def plan(tmp_path: Path, agent_url: str) -> CollectPlan:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"\n".join(orjson.dumps(ROW) for _ in range(3)) + b"\n")
    return CollectPlan(
        {"agent": agent_url},
        TaskSource(tasks, agent_name="agent"),
        tmp_path / "out.jsonl",
        num_samples_in_parallel=2,
        rollout_timeout_s=30.0,
        max_attempts=2,
    )


@pytest.mark.parametrize("agent", [broken_header, reset], indirect=True, ids=["unreadable-answer", "reset"])
async def test_an_agent_answer_that_cannot_be_read_is_a_counted_failure(agent: str, tmp_path: Path) -> None:
    summary = await collect(plan(tmp_path, agent), io.StringIO())
    assert (summary.finished, summary.failed, summary.missing) == (0, 3, 0)
    failures = [orjson.loads(line) for line in failures_path(tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert len(failures) == 3
    assert all(("unreadable answer" in f["error"]) or ("connection dropped" in f["error"]) for f in failures)


async def test_a_stop_while_waiting_for_a_free_slot_is_seen_at_once(tmp_path: Path) -> None:
    """One slot, its rollout never answered: the stop used to wait for that rollout (up to rollout_timeout_s)."""
    arrived = asyncio.Event()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.set()
        await asyncio.sleep(3600)

    server = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        stop = asyncio.Event()
        run = asyncio.create_task(collect(replace(plan(tmp_path, url), num_samples_in_parallel=1), io.StringIO(), stop))
        await asyncio.wait_for(arrived.wait(), timeout=60)
        stop.set()
        summary = await asyncio.wait_for(run, timeout=60)  # a hang guard, not a timing assertion
    assert (summary.finished, summary.failed, summary.missing) == (0, 0, 3)


@contextlib.asynccontextmanager
async def scripted_agent(status: int, code: str | int) -> AsyncIterator[tuple[str, list[Any]]]:
    """An agent whose /run always answers `status` with error.code `code`; yields its URL and the rows it got."""
    seen: list[Any] = []

    async def run(request: Request) -> Response:
        seen.append(orjson.loads(await request.body()))
        return error_response(status, f"scripted failure {status}", code=str(code) if isinstance(code, str) else None)

    async with serve_in_background(Starlette(routes=[Route("/run", run, methods=["POST"])])) as url:
        yield url, seen


async def test_an_invalid_task_is_recorded_once_with_its_class_and_not_retried(tmp_path: Path) -> None:
    async with scripted_agent(422, "x") as (url, seen):
        summary = await collect(plan(tmp_path, url), io.StringIO())
    assert len(seen) == 3, "a 4xx is the task's fault: not retried"
    assert summary.failed_by_class == {"invalid_task": 3}
    failures = [orjson.loads(line) for line in failures_path(tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert {(f["class"], f["status"], f["error"]) for f in failures} == {("invalid_task", 422, "scripted failure 422")}


async def test_infrastructure_failures_in_a_row_stop_the_run_keeping_what_finished(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    log = io.StringIO()
    async with scripted_agent(502, "model") as (url, seen):
        many = replace(plan(tmp_path, url), num_samples_in_parallel=1, max_attempts=1, max_consecutive_failures=4)
        tasks.write_bytes(b"\n".join(orjson.dumps(ROW) for _ in range(50)) + b"\n")
        summary = await collect(many, log)
    assert len(seen) == 4
    assert (summary.failed, summary.failed_by_class, summary.missing) == (4, {"model": 4}, 46)
    assert "4 rollouts in a row failed; the last one: model (HTTP 502): scripted failure 502" in log.getvalue()
    assert "run the same command again" in log.getvalue()


async def test_a_second_interrupt_exits_at_once_and_the_first_stops_in_order(tmp_path: Path) -> None:
    """The first Ctrl-C stops in order; the second used to be ignored while in-flight rollouts were cancelled."""
    stop, log, exits = asyncio.Event(), io.StringIO(), []
    signals = StopSignals(stop, log, exit_now=exits.append)
    signals.received()
    assert stop.is_set() and exits == []
    signals.received()
    assert exits == [130]
    assert "second interrupt: exiting now" in log.getvalue()
