"""ng_collect_rollouts' progress: the snapshot's arithmetic on an injected clock (rates over a window, ETA,
mean reward, failures by class), the file written atomically, and the file read while a collection is held
half-way, then after it finished or was stopped, agreeing with the output and failures files."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ngym.api.gym import Gym
from ngym.cli.collect import build_plan, parse_args
from ngym.config.errors import ConfigError
from ngym.http.app import error_response, json_response, serve_in_background
from ngym.rollouts.collect import CollectPlan, collect
from ngym.rollouts.engine import Outcome
from ngym.rollouts.failures import RolloutFailed
from ngym.rollouts.output import failures_path
from ngym.rollouts.progress import (
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    SCHEMA,
    STOPPED,
    CollectProgress,
    ProgressReporter,
    progress_path,
    write_progress_file,
)
from ngym.rollouts.tasks import Task, TaskSource

HANG_GUARD_S = 60.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def task(index: int = 0) -> Task:
    return Task(task_index=index, rollout_index=0, agent="agent", line_no=1, row={"agent_ref": {"name": "agent"}})


def finished(reward: Any = 1.0) -> Outcome:
    return Outcome(task(), {"reward": reward})


def failed(failure_class: str) -> Outcome:
    return Outcome(task(), None, RolloutFailed(failure_class, "secret detail sk-123"))


def tracker(clock: FakeClock, window_s: float = 10.0) -> CollectProgress:
    return CollectProgress(output=Path("/runs/out.jsonl"), window_s=window_s, clock=clock,
                           wall_clock=lambda: clock.now + 1_700_000_000, pid=4242)  # fmt: skip


def test_counts_in_flight_mean_reward_and_classes_with_resumed_rows_counted_as_done() -> None:
    clock = FakeClock()
    progress = tracker(clock)
    assert progress.snapshot()["state"] == PENDING
    progress.begin(20, resumed=4, resumed_reward_count=4, resumed_reward_total=2.0)
    started = progress.count_started(iter(range(16)))
    for _ in range(9):
        next(started)
    for outcome in (finished(1.0), finished(0), finished(True), failed("model"), failed("verify"), failed("model")):
        progress.ended(outcome)
    clock.now += 5
    snap = progress.snapshot()
    assert snap["schema"] == SCHEMA and snap["version"] == 1
    assert (snap["state"], snap["pid"], snap["output"]) == (RUNNING, 4242, "/runs/out.jsonl")
    assert (snap["expected"], snap["resumed"], snap["finished"], snap["done"]) == (20, 4, 3, 7)
    assert (snap["failed"], snap["failed_by_class"]) == (3, {"model": 2, "verify": 1})
    assert (snap["in_flight"], snap["remaining"]) == (3, 10)
    # A boolean is no reward (as in the summary): 1.0 and 0 join the resumed rows' 2.0 over 4.
    assert snap["reward"] == {"mean": 3.0 / 6, "count": 6}
    assert snap["started_at"] == 1_700_001_000.0 and snap["updated_at"] == 1_700_001_005.0
    assert snap["elapsed_s"] == 5.0
    assert progress.bar_text() == "reward=0.500, failed model=2 verify=1"


def test_the_recent_rate_follows_a_slowdown_and_the_eta_uses_it() -> None:
    clock = FakeClock()
    progress = tracker(clock, window_s=10.0)
    progress.begin(1000)
    for _ in range(10):  # 10 s at 10 rollouts/s, one snapshot a second (as the reporter samples)
        clock.now += 1
        for _ in range(10):
            progress.ended(finished())
        progress.snapshot()
    snap = progress.snapshot()
    assert snap["rate"] == {"recent": 10.0, "overall": 10.0, "window_s": 10.0}
    assert snap["eta_s"] == 90.0  # 900 left at 10/s
    for _ in range(10):  # then 10 s at 2 rollouts/s, failures included: every rollout that ended counts
        clock.now += 1
        progress.ended(finished())
        progress.ended(failed("timeout"))
        progress.snapshot()
    snap = progress.snapshot()
    assert snap["rate"]["recent"] == 2.0, "the window holds the slow 10 s only"
    assert snap["rate"]["overall"] == 6.0
    assert snap["remaining"] == 880 and snap["eta_s"] == 440.0


def test_no_rollout_ending_in_the_window_means_no_eta() -> None:
    clock = FakeClock()
    progress = tracker(clock, window_s=10.0)
    progress.begin(10)
    assert progress.snapshot()["eta_s"] is None, "nothing ended yet"
    clock.now += 1
    progress.ended(finished())
    assert progress.snapshot()["eta_s"] == 9.0
    for _ in range(12):  # held: nothing ends for 12 s
        clock.now += 1
        progress.snapshot()
    snap = progress.snapshot()
    assert snap["rate"]["recent"] == 0.0 and snap["eta_s"] is None
    assert snap["rate"]["overall"] == pytest.approx(1 / 13, abs=1e-3)


def test_the_window_reaches_back_to_the_start_when_snapshots_are_rare() -> None:
    clock = FakeClock()
    progress = tracker(clock, window_s=10.0)
    progress.begin(100)
    for _ in range(30):
        progress.ended(finished())
    clock.now += 30
    snap = progress.snapshot()
    assert snap["rate"]["recent"] == snap["rate"]["overall"] == 1.0


@pytest.mark.parametrize(("state", "eta"), [(FINISHED, 0.0), (STOPPED, None), (FAILED, None)])
def test_an_ended_run_is_frozen_with_nothing_in_flight(state: str, eta: float | None) -> None:
    clock = FakeClock()
    progress = tracker(clock)
    progress.begin(3)
    started = progress.count_started(iter(range(3)))
    next(started), next(started)
    clock.now += 2
    progress.ended(finished(0.5))
    progress.end(state)
    first = progress.snapshot()
    clock.now += 100
    assert progress.snapshot() == first, "later snapshots tell the same end"
    assert (first["state"], first["in_flight"], first["eta_s"], first["elapsed_s"]) == (state, 0, eta, 2.0)
    assert first["rate"]["overall"] == 0.5
    with pytest.raises(ValueError, match="not a final state"):
        progress.end(RUNNING)


def test_a_second_run_on_the_same_object_starts_from_nothing_and_an_early_end_is_an_end() -> None:
    clock = FakeClock()
    progress = tracker(clock)
    progress.end(FAILED)  # ended before it began
    assert (progress.snapshot()["state"], progress.snapshot()["elapsed_s"]) == (FAILED, 0.0)
    progress.begin(5)
    next(progress.count_started(iter(range(1))))
    progress.ended(failed("agent"))
    progress.ended(finished())
    progress.end(FINISHED)
    clock.now += 10
    progress.begin(7)
    snap = progress.snapshot()
    assert (snap["state"], snap["expected"], snap["done"], snap["failed"], snap["in_flight"]) == (RUNNING, 7, 0, 0, 0)
    assert snap["failed_by_class"] == {} and snap["reward"] == {"mean": None, "count": 0}


def test_the_snapshot_holds_no_message_and_no_command_line() -> None:
    progress = tracker(FakeClock())
    progress.begin(2)
    progress.ended(failed("model"))
    text = orjson.dumps(progress.snapshot()).decode()
    assert "sk-123" not in text and "secret" not in text


def test_the_file_is_replaced_whole_and_no_temporary_is_left(tmp_path: Path) -> None:
    path = progress_path(tmp_path / "out.jsonl")
    assert path.name == "out.progress.json"
    write_progress_file(path, {"done": 1})
    write_progress_file(path, {"done": 2})
    assert orjson.loads(path.read_bytes()) == {"done": 2}
    assert os.listdir(tmp_path) == ["out.progress.json"]
    with pytest.raises(OSError):
        write_progress_file(tmp_path / "missing" / "out.progress.json", {"done": 3})


async def test_a_file_that_cannot_be_written_is_reported_once_and_never_stops_the_run(tmp_path: Path) -> None:
    log = io.StringIO()
    progress = tracker(FakeClock())
    progress.begin(1)
    reporter = ProgressReporter(progress, None, tmp_path / "missing" / "p.json", 1.0, log)
    reporter.write()
    reporter.write()
    assert log.getvalue().count("cannot write") == 1


# A collection held half-way: an in-process agent answers each row as the row's `do` says.


@contextlib.asynccontextmanager
async def scripted_agent(release: asyncio.Event) -> AsyncIterator[tuple[str, list[str]]]:
    held: list[str] = []

    async def run(request: Request) -> Response:
        row = orjson.loads(await request.body())
        do = row["do"]
        if do == "hold":
            held.append(do)
            await release.wait()
            return json_response({**row, "reward": 1.0})
        if do.startswith("fail_"):
            return error_response(502, "scripted", code=do.removeprefix("fail_"))
        return json_response({**row, "reward": float(do.removeprefix("ok"))})

    async with serve_in_background(Starlette(routes=[Route("/run", run, methods=["POST"])])) as url:
        yield url, held


ROWS = ["ok1", "ok1", "ok0", "ok1", "fail_model", "fail_model", "fail_verify", "hold", "hold", "hold"]


def plan(tmp_path: Path, url: str, **changes: Any) -> CollectPlan:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"".join(orjson.dumps({"responses_create_params": {"input": f"row {i}"}, "do": do}) + b"\n"
                               for i, do in enumerate(ROWS)))  # fmt: skip
    base = CollectPlan({"agent": url}, TaskSource(tasks, agent_name="agent"), tmp_path / "out.jsonl",
                       num_samples_in_parallel=10, max_attempts=1, progress_interval_s=0.05)  # fmt: skip
    return replace(base, **changes)


def read(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes()) if path.is_file() else {}


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Until the state is reached (polled; the limit is a hang guard only)."""
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"still waiting for {what} after {HANG_GUARD_S:g} s") from None


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.parametrize("ending", ["release", "stop"])
async def test_the_file_read_while_rollouts_are_held_then_at_the_end_matches_the_files(
    tmp_path: Path, ending: str
) -> None:
    release, stop = asyncio.Event(), asyncio.Event()
    output = tmp_path / "out.jsonl"
    progress_file = progress_path(output)
    async with scripted_agent(release) as (url, held):
        first = plan(tmp_path, url)
        await collect(replace(first, source=replace(first.source, limit=2)), io.StringIO())  # two resumed later
        assert read(progress_file)["state"] == FINISHED
        run = asyncio.create_task(collect(first, io.StringIO(), stop))
        await wait_for(lambda: len(held) == 3 and read(progress_file).get("done") == 4
                       and read(progress_file).get("failed") == 3, "four done and three held")  # fmt: skip
        snap = read(progress_file)
        assert snap["state"] == RUNNING and snap["pid"] == os.getpid() and snap["output"] == str(output)
        assert (snap["expected"], snap["resumed"], snap["finished"], snap["in_flight"]) == (10, 2, 2, 3)
        assert snap["failed_by_class"] == {"model": 2, "verify": 1}
        assert snap["reward"] == {"mean": 0.75, "count": 4} and snap["remaining"] == 3
        await wait_for(lambda: read(progress_file)["updated_at"] > snap["updated_at"], "rewritten while held")
        (release if ending == "release" else stop).set()
        summary = await asyncio.wait_for(run, HANG_GUARD_S)
        release.set()  # the agent's held handlers end too (the server waits for them)
    end = read(progress_file)
    assert end["state"] == (FINISHED if ending == "release" else STOPPED)
    assert end["done"] == lines(output) == summary.already_done + summary.finished
    assert end["failed"] == lines(failures_path(output)) == summary.failed == 3
    assert end["remaining"] == summary.missing == (0 if ending == "release" else 3)
    assert end["in_flight"] == 0 and end["failed_by_class"] == summary.failed_by_class
    assert end["reward"]["mean"] == summary.mean_reward
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


async def test_too_many_failures_in_a_row_end_stopped_with_the_counts_of_the_files(tmp_path: Path) -> None:
    async with scripted_agent(asyncio.Event()) as (url, _):
        many = plan(tmp_path, url, num_samples_in_parallel=1, max_consecutive_failures=2)
        rows = [orjson.dumps({"responses_create_params": {"input": f"r{i}"}, "do": "fail_tool"}) for i in range(20)]
        many.source.path.write_bytes(b"\n".join(rows) + b"\n")  # type: ignore[union-attr]
        summary = await collect(many, io.StringIO())
    end = read(progress_path(many.output_path))
    assert (end["state"], end["failed"], end["failed_by_class"], end["remaining"]) == (STOPPED, 2, {"tool": 2}, 18)
    assert end["failed"] == lines(failures_path(many.output_path)) == summary.failed
    assert end["eta_s"] is None and end["reward"] == {"mean": None, "count": 0}


async def test_interval_0_writes_no_file_and_an_earlier_runs_file_is_removed(tmp_path: Path) -> None:
    release = asyncio.Event()
    release.set()
    progress_file = progress_path(tmp_path / "out.jsonl")
    progress_file.write_text('{"state": "running"}')
    async with scripted_agent(release) as (url, _):
        await collect(plan(tmp_path, url, progress_interval_s=0), io.StringIO())
    assert not progress_file.exists()


def test_the_interval_is_an_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = ["+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl", "+output_jsonl_fpath=o.jsonl"]
    assert build_plan(parse_args(paths), {}).progress_interval_s == 2.0
    assert build_plan(parse_args([*paths, "+progress_interval_s=0"]), {}).progress_interval_s == 0
    with pytest.raises(ConfigError, match="progress_interval_s: Input should be greater than or equal to 0"):
        parse_args([*paths, "+progress_interval_s=-1"])


async def test_the_python_api_keeps_the_same_snapshot_and_ends_stopped_when_the_loop_is_left() -> None:
    release = asyncio.Event()
    progress = CollectProgress()
    rows = [{"responses_create_params": {"input": f"row {i}"}, "do": do} for i, do in enumerate(ROWS)]
    async with scripted_agent(release) as (url, held):
        collecting = Gym({"agent": url}).collect(rows, agent_name="agent", max_attempts=1, progress=progress)
        outcomes = cast(AsyncGenerator[Outcome, None], collecting)  # an async generator: it can be closed
        async with contextlib.aclosing(outcomes):
            seen = 0
            async for _ in outcomes:
                seen += 1
                if seen == 7:
                    await wait_for(lambda: len(held) == 3, "three held")
                    snap = progress.snapshot()
                    assert (snap["state"], snap["output"], snap["expected"], snap["done"]) == (RUNNING, None, 10, 4)
                    assert (snap["failed_by_class"], snap["in_flight"]) == ({"model": 2, "verify": 1}, 3)
                    assert snap["reward"] == {"mean": 0.75, "count": 4}
                    break
        release.set()
    assert progress.state == STOPPED and progress.snapshot()["in_flight"] == 0
