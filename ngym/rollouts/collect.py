"""Feed task rows through an agent's /run and write one scored rollout per line as each finishes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
from tqdm import tqdm

from ngym.gc_tuning import tune_garbage_collector
from ngym.http.client import HttpClient, RetryPolicy, Timeouts, UpstreamError
from ngym.rollouts.failures import (
    AGENT,
    ConsecutiveFailures,
    RolloutFailed,
    from_agent_answer,
    from_upstream_error,
)
from ngym.rollouts.output import (
    META_KEY,
    JsonlAppender,
    done_keys,
    failures_path,
    repair_partial_line,
    summary_path,
)
from ngym.rollouts.summary import Summary
from ngym.rollouts.tasks import Task, check_input, iter_tasks

EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C


@dataclass(frozen=True)
class CollectPlan:
    agent_url: str
    input_path: Path
    output_path: Path
    limit: int | None
    num_repeats: int
    num_samples_in_parallel: int
    responses_create_params: dict[str, Any] | None
    overwrite: bool
    rollout_timeout_s: float
    max_attempts: int
    max_consecutive_failures: int = 25


async def collect(plan: CollectPlan, log: TextIO, stop: asyncio.Event | None = None) -> Summary:
    rows = check_input(plan.input_path, plan.limit)
    summary = Summary(expected=rows * plan.num_repeats)
    output = plan.output_path
    if plan.overwrite:
        output.unlink(missing_ok=True)
    removed = repair_partial_line(output)
    if removed:
        print(f"ng_collect_rollouts: removed a partial last line ({removed} bytes) left in {output}", file=log)
    done = set(done_keys(output))
    summary.already_done = len(done)
    if done:
        print(f"ng_collect_rollouts: resuming: {len(done)} rollouts already in {output} are skipped", file=log)

    writer = JsonlAppender(output)
    failures = failures_path(output)
    failures.unlink(missing_ok=True)  # earlier failures are retried now
    failure_writer: JsonlAppender | None = None
    stop = stop or asyncio.Event()  # set by SIGINT/SIGTERM, or by the caller
    signals = StopSignals(stop, log)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, signals.received)
        loop.add_signal_handler(signal.SIGTERM, signals.received)
    progress = tqdm(total=summary.expected - summary.already_done, unit="rollout", file=log, dynamic_ncols=True)
    http = HttpClient(
        timeouts=Timeouts(total=plan.rollout_timeout_s),
        retry=RetryPolicy(max_attempts=plan.max_attempts, deadline=plan.rollout_timeout_s),
    )
    tune_garbage_collector()
    started = time.monotonic()
    slots = asyncio.Semaphore(plan.num_samples_in_parallel)
    running: set[asyncio.Task[None]] = set()

    def finished(job: asyncio.Task[None]) -> None:
        running.discard(job)
        slots.release()

    in_a_row = ConsecutiveFailures(plan.max_consecutive_failures)

    async def run_one(task: Task) -> None:
        nonlocal failure_writer
        try:
            row = await _run_rollout(http, plan.agent_url, task)
        except Exception as exc:  # every rollout ends counted: finished, or failed with its class and reason
            failure = (
                exc
                if isinstance(exc, RolloutFailed)
                else RolloutFailed(AGENT, f"ng_collect_rollouts: {type(exc).__name__}: {exc}")
            )
            summary.add_failure(failure.failure_class)
            if failure_writer is None:
                failure_writer = JsonlAppender(failures)
            failure_writer.write({META_KEY: _meta(task), **failure.record()})
            if in_a_row.failed(failure) and not stop.is_set():
                print(f"\n{in_a_row.message()}", file=log)
                stop.set()
        else:
            writer.write(row)
            summary.add(row)
            in_a_row.finished()
        progress.update(1)
        progress.set_postfix(_postfix(summary), refresh=False)

    try:
        async with http:
            stopper = asyncio.create_task(stop.wait())
            for task in iter_tasks(plan.input_path, plan.limit, plan.num_repeats, plan.responses_create_params):
                if task.key in done:
                    continue
                if not await _free_slot(slots, stopper):
                    break
                job = asyncio.create_task(run_one(task))
                running.add(job)
                job.add_done_callback(finished)
            while running and not stop.is_set():
                await asyncio.wait([stopper, *running], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if stop.is_set():
                # Rollouts finishing together can leave none in flight by the time the loop sees the signal.
                print(f"\nng_collect_rollouts: stopping: cancelling {len(running)} rollouts in flight", file=log)
                for job in list(running):
                    job.cancel()
                await asyncio.gather(*running, return_exceptions=True)
    finally:
        progress.close()
        writer.close()
        if failure_writer is not None:
            failure_writer.close()
        wall = time.monotonic() - started
        summary_path(output).write_bytes(
            orjson.dumps(summary.as_dict(wall), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )
    summary.wall_seconds = wall
    return summary


class StopSignals:
    """The first Ctrl-C or SIGTERM stops the run in order (no new rollout, those in flight cancelled, the summary
    written); a second one exits at once. Every row is written by one os.write of a whole line, so the files keep
    whole lines either way, and the same command resumes."""

    def __init__(self, stop: asyncio.Event, log: TextIO, exit_now: Callable[[int], Any] = os._exit) -> None:
        self.stop = stop
        self.log = log
        self.exit_now = exit_now
        self.seen = 0

    def received(self) -> None:
        self.seen += 1
        if self.seen == 1:
            self.stop.set()
            return
        print(
            "\nng_collect_rollouts: second interrupt: exiting now without a summary; finished rollouts are in the "
            "output, run the same command to collect the rest",
            file=self.log,
            flush=True,
        )
        self.exit_now(EXIT_INTERRUPTED)


async def _free_slot(slots: asyncio.Semaphore, stopper: asyncio.Task[Any]) -> bool:
    """Wait for a free slot, or for a stop (seen at once, not when some rollout finishes): True for a slot."""
    if stopper.done():
        return False
    if slots.locked():
        acquire = asyncio.ensure_future(slots.acquire())
        await asyncio.wait([acquire, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
            return False
    else:
        await slots.acquire()
    if stopper.done():
        slots.release()
        return False
    return True


async def _run_rollout(http: HttpClient, agent_url: str, task: Task) -> dict[str, Any]:
    try:
        result = await http.post_json(agent_url + "/run", task.row)
    except UpstreamError as exc:
        raise from_upstream_error(exc) from None
    if not result.ok:
        raise from_agent_answer(result)
    try:
        body = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        raise RolloutFailed(AGENT, "agent /run answered with invalid JSON", result.status) from None
    if not isinstance(body, dict) or not isinstance(body.get("reward"), int | float):
        raise RolloutFailed(AGENT, "agent /run answered without a numeric 'reward'", result.status)
    return {**body, META_KEY: _meta(task)}


def _meta(task: Task) -> dict[str, int]:
    return {"task_index": task.index, "repeat_index": task.repeat}


def _postfix(summary: Summary) -> dict[str, Any]:
    postfix: dict[str, Any] = {"failed": summary.failed}
    if summary.mean_reward is not None:
        postfix["reward"] = f"{summary.mean_reward:.3f}"
    return postfix
