"""Feed task rows through their agents' /run and write one scored rollout per line as each finishes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
from tqdm import tqdm

from ngym.config.errors import ConfigError
from ngym.gc_tuning import tune_garbage_collector
from ngym.http.client import HttpClient, RetryPolicy, Timeouts, UpstreamError
from ngym.rollouts.failures import (
    AGENT,
    ConsecutiveFailures,
    RolloutFailed,
    from_agent_answer,
    from_upstream_error,
)
from ngym.rollouts.keys import AGENT_REF, ROLLOUT_INDEX, TASK_INDEX, RolloutKey
from ngym.rollouts.output import (
    JsonlAppender,
    failures_path,
    read_done,
    repair_partial_line,
    summary_path,
)
from ngym.rollouts.summary import Summary
from ngym.rollouts.tasks import Task, TaskCheck, TaskSource, check_tasks, iter_tasks, unused_repeat_entries

EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C


@dataclass(frozen=True)
class CollectPlan:
    agent_urls: Mapping[str, str]  # every agent of the running ng_run: name -> URL
    source: TaskSource
    output_path: Path
    num_samples_in_parallel: int = 64
    overwrite: bool = False
    rollout_timeout_s: float = 3600.0
    max_attempts: int = 3
    max_consecutive_failures: int = 25


async def collect(plan: CollectPlan, log: TextIO, stop: asyncio.Event | None = None) -> Summary:
    output = plan.output_path
    summary = Summary(expected=0)
    done = _prepare_output(plan, summary, log)
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
            row = await _run_rollout(http, plan.agent_urls[task.agent], task)
        except Exception as exc:  # every rollout ends counted: finished, or failed with its class and reason
            failure = (
                exc
                if isinstance(exc, RolloutFailed)
                else RolloutFailed(AGENT, f"ng_collect_rollouts: {type(exc).__name__}: {exc}")
            )
            summary.add_failure(failure.failure_class)
            if failure_writer is None:
                failure_writer = JsonlAppender(failures)
            failure_writer.write({**_keys(task), **failure.record()})
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
            for task in iter_tasks(plan.source):
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


def _prepare_output(plan: CollectPlan, summary: Summary, log: TextIO) -> set[RolloutKey]:
    """Check the run against the output it continues (or clear that output); return the rollouts already done."""
    output = plan.output_path
    if plan.overwrite:
        check = _check(plan, set())
        output.unlink(missing_ok=True)
        done: set[RolloutKey] = set()
    else:
        removed = repair_partial_line(output)
        if removed:
            print(f"ng_collect_rollouts: removed a partial last line ({removed} bytes) left in {output}", file=log)
        done = read_done(output, summary.add_earlier)
        check = _check(plan, done)
        if check.already_done < len(done):
            raise ConfigError(
                f"{output} holds {len(done) - check.already_done} rollouts that are not in this run (another "
                "input, +limit or +num_repeats?): write to another output, or pass +overwrite=true to start afresh"
            )
        if done:
            print(f"ng_collect_rollouts: resuming: {len(done)} rollouts already in {output} are skipped", file=log)
    summary.expected = check.rollouts
    for name in unused_repeat_entries(plan.source, check):
        print(f"ng_collect_rollouts: warning: +num_repeats names {name!r}, which no row uses", file=log)
    return done


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
    return {**body, **_keys(task)}


def _keys(task: Task) -> dict[str, Any]:
    """What NeMo Gym sets on every row it writes, over whatever the agent answered."""
    return {TASK_INDEX: task.task_index, ROLLOUT_INDEX: task.rollout_index, AGENT_REF: task.row[AGENT_REF]}


def _check(plan: CollectPlan, done: set[RolloutKey]) -> TaskCheck:
    """Every row checked, and every agent the rows name running, before anything starts."""
    check = check_tasks(plan.source, done)
    known = ", ".join(sorted(plan.agent_urls)) or "none"
    for name, use in check.agents.items():
        if name not in plan.agent_urls:
            named_by = f"its {AGENT_REF} names" if use.from_row else "+agent_name gives it"
            raise ConfigError(
                f"{plan.source.path}:{use.first_line}: {named_by} the agent {name!r}, which is not running in "
                f"ng_run (its agents: {known})"
            )
    return check


def _postfix(summary: Summary) -> dict[str, Any]:
    postfix: dict[str, Any] = {"failed": summary.failed}
    if summary.mean_reward is not None:
        postfix["reward"] = f"{summary.mean_reward:.3f}"
    return postfix
