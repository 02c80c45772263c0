"""The rollout engine always returns, with every outcome handed back exactly once, whatever finishes when.

The engine used to decide that it was done from a set that each job's done callback emptied one loop step after
the job ended: when the loop took the last outcome in the step its job ended, it waited for an outcome that
would never come (ng_collect_rollouts wrote every row and never exited). These tests drive such interleavings
with fake rollouts that end after a given number of loop steps, on asyncio's and uvloop's loops; a hang is
found by counting loop steps, not by a clock.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop

from ngym.http.client import HttpClient, RetryPolicy
from ngym.rollouts import engine
from ngym.rollouts.collect import CollectPlan, collect
from ngym.rollouts.engine import Outcome, row_keys, run_rollouts
from ngym.rollouts.failures import MODEL, RolloutFailed
from ngym.rollouts.output import failures_path, summary_path
from ngym.rollouts.tasks import Task, TaskSource
from ngym.upstream.routing import ReplicaRouter

AGENT_URLS = {"agent": "http://127.0.0.1:9"}  # never called: the rollouts are fakes
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def make_tasks(count: int) -> list[Task]:
    return [Task(i, 0, "agent", i + 1, {"agent_ref": {"name": "agent"}, "i": i}) for i in range(count)]


async def steps(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


@dataclass
class FakeRollouts:
    """Rollouts that end after a number of loop steps (and optionally a short sleep) each, recording which ended."""

    step_counts: list[int]
    sleeps_s: list[float] = field(default_factory=list)
    failing: frozenset[int] = frozenset()
    ended: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    async def __call__(self, http: HttpClient, agent: ReplicaRouter, task: Task, retry: RetryPolicy | None) -> Outcome:
        index = task.task_index
        try:
            await steps(self.step_counts[index])
            if self.sleeps_s:
                await asyncio.sleep(self.sleeps_s[index])
        except asyncio.CancelledError:
            self.cancelled.append(index)
            raise
        self.ended.append(index)
        if index in self.failing:
            return Outcome(task, None, RolloutFailed(MODEL, f"rollout {index} failed", 502))
        return Outcome(task, {"reward": 1.0, **row_keys(task)})


async def within_steps(work: Awaitable[Any], budget: int) -> Any:
    """`work`'s result, or a failure when it has not returned after `budget` loop steps of a bystander."""
    job = asyncio.ensure_future(work)
    for _ in range(budget):
        if job.done():
            return job.result()
        await asyncio.sleep(0)
    job.cancel()
    pytest.fail(f"the engine did not return within {budget} loop steps (it hangs)")


async def consume(
    fakes: FakeRollouts,
    max_in_flight: int,
    consumer_steps: int = 0,
    stop_after: int | None = None,
) -> list[int]:
    stop = asyncio.Event()
    delivered: list[int] = []
    async with HttpClient() as http:
        async for outcome in run_rollouts(http, AGENT_URLS, make_tasks(len(fakes.step_counts)), max_in_flight, stop):
            delivered.append(outcome.task.task_index)
            if stop_after is not None and len(delivered) == stop_after:
                stop.set()
            await steps(consumer_steps)
    return delivered


@pytest.mark.parametrize("loop", list(LOOPS))
def test_two_rollouts_ending_a_few_steps_apart_always_return(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every combination of step counts for two rollouts and of the consumer's pace, on both event loops."""
    for first, second, consumer_steps, max_in_flight in itertools.product(range(6), range(6), range(3), (1, 2)):
        fakes = FakeRollouts([first, second])
        monkeypatch.setattr(engine, "run_rollout", fakes)
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            delivered = runner.run(within_steps(consume(fakes, max_in_flight, consumer_steps), budget=10_000))
        assert sorted(delivered) == [0, 1], (first, second, consumer_steps, max_in_flight)


@pytest.mark.parametrize("loop", list(LOOPS))
def test_random_interleavings_and_stops_hand_back_every_ended_rollout_once(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of rollouts with random step counts and sleeps, many concurrency values, stops at random points:
    the engine returns; without a stop every rollout is handed back once; with one, every rollout that ended is
    handed back once and every other one was cancelled or never started."""
    rng = random.Random(20261204)
    total = 0
    for trial in range(60):
        count = rng.choice([1, 2, 3, 7, 30, 120, 400])
        fakes = FakeRollouts(
            [rng.choice([0, 0, 1, 2, 3, 5, 13]) for _ in range(count)],
            [rng.choice([0.0, 0.0, 0.0001, 0.0005]) for _ in range(count)] if trial % 2 else [],
        )
        max_in_flight = rng.choice([1, 2, 3, 8, 64, 1000])
        stop_after = rng.choice([None, None, 1, max(1, count // 2), count])
        monkeypatch.setattr(engine, "run_rollout", fakes)
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            work = consume(fakes, max_in_flight, rng.choice([0, 1, 4]), stop_after)
            delivered = runner.run(asyncio.wait_for(work, timeout=120))  # a hang guard, not a timing check
        where = f"trial {trial}: {count} rollouts, max_in_flight {max_in_flight}, stop after {stop_after}"
        assert len(delivered) == len(set(delivered)), where
        assert sorted(delivered) == sorted(fakes.ended), where
        if stop_after is None:
            assert len(delivered) == count, where
        else:
            assert len(delivered) >= min(stop_after, count), where
            assert not set(fakes.cancelled) & set(delivered), where
        total += count
    assert total > 2000


async def test_a_stop_hands_back_what_had_ended_before_it_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight rollouts end in the same loop step; the consumer stops at the first: the other seven are handed back."""
    fakes = FakeRollouts([3] * 8)
    monkeypatch.setattr(engine, "run_rollout", fakes)
    assert sorted(await consume(fakes, max_in_flight=8, stop_after=1)) == list(range(8))


async def test_a_stop_cancels_the_rollouts_still_running_and_starts_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = FakeRollouts([0] + [10_000] * 3 + [0] * 6)
    monkeypatch.setattr(engine, "run_rollout", fakes)
    delivered = await consume(fakes, max_in_flight=4, stop_after=1)
    assert delivered == [0]
    assert sorted(fakes.cancelled) == [1, 2, 3]
    assert fakes.ended == [0]  # rollouts 4..9 never started


async def test_an_error_reading_the_tasks_comes_after_the_rollouts_already_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fakes = FakeRollouts([2, 1, 0])
    monkeypatch.setattr(engine, "run_rollout", fakes)

    def tasks_then_an_error() -> Any:
        yield from make_tasks(3)
        raise ValueError("line 4: not JSON")

    delivered: list[int] = []
    async with HttpClient() as http:
        with pytest.raises(ValueError, match="line 4"):
            async for outcome in run_rollouts(http, AGENT_URLS, tasks_then_an_error(), 8, asyncio.Event()):
                delivered.append(outcome.task.task_index)
    assert sorted(delivered) == [0, 1, 2]


async def test_a_stop_after_failures_in_a_row_keeps_the_rollouts_that_finished(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Eight rollouts end together, the first three failing, with max_consecutive_failures=3: the stop used to
    drop the five that finished, while its message said finished rollouts are kept. The files and the summary
    agree."""
    fakes = FakeRollouts([3] * 8, failing=frozenset({0, 1, 2}))
    monkeypatch.setattr(engine, "run_rollout", fakes)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"".join(orjson.dumps({"responses_create_params": {"input": str(i)}}) + b"\n" for i in range(8)))
    output = tmp_path / "out.jsonl"
    plan = CollectPlan(AGENT_URLS, TaskSource(tasks, agent_name="agent"), output, num_samples_in_parallel=8,
                       max_consecutive_failures=3)  # fmt: skip
    log = io.StringIO()
    summary = await collect(plan, log)
    assert "3 rollouts in a row failed" in log.getvalue()
    rows = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    failures = [orjson.loads(line) for line in failures_path(output).read_bytes().splitlines()]
    assert sorted(row["_ng_task_index"] for row in rows) == [3, 4, 5, 6, 7]
    assert sorted(f["_ng_task_index"] for f in failures) == [0, 1, 2]
    assert (summary.finished, summary.failed) == (5, 3)
    written = orjson.loads(summary_path(output).read_bytes())
    assert (written["finished"], written["failed"]) == (5, 3)
