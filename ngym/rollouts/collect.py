"""Feed task rows through their agents' /run and write one scored rollout per line as each finishes."""

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

from ngym.config.errors import ConfigError
from ngym.gc_tuning import tune_garbage_collector
from ngym.rollouts.engine import AgentUrls, rollout_client, run_rollouts
from ngym.rollouts.failures import (
    ConsecutiveFailures,
)
from ngym.rollouts.keys import RolloutKey
from ngym.rollouts.output import (
    JsonlAppender,
    failures_path,
    read_done,
    repair_partial_line,
    summary_path,
)
from ngym.rollouts.output_lock import OutputLock
from ngym.rollouts.progress import (
    DEFAULT_INTERVAL_S,
    FAILED,
    FINISHED,
    STOPPED,
    CollectProgress,
    ProgressReporter,
    progress_path,
)
from ngym.rollouts.summary import Summary
from ngym.rollouts.tasks import TaskCheck, TaskSource, check_run, iter_tasks, unused_repeat_entries

EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C


@dataclass(frozen=True)
class CollectPlan:
    agent_urls: AgentUrls  # every agent of the running ng_run: name -> its URL or every replica's
    source: TaskSource
    output_path: Path
    num_samples_in_parallel: int = 64
    overwrite: bool = False
    rollout_timeout_s: float = 3600.0
    max_attempts: int = 3
    max_consecutive_failures: int = 25
    progress_interval_s: float = DEFAULT_INTERVAL_S  # the progress file's period; 0: no progress file


async def collect(
    plan: CollectPlan, log: TextIO, stop: asyncio.Event | None = None, lock: OutputLock | None = None
) -> Summary:
    """Collect the plan's rollouts into its output, holding the output's lock for the whole run (`lock`, when the
    caller took it earlier, e.g. before starting the servers)."""
    if lock is None:
        with OutputLock.acquire(plan.output_path, "ng_collect_rollouts") as own:
            return await collect(plan, log, stop, own)
    assert lock.output == plan.output_path, (lock.output, plan.output_path)
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
    tracker = _begin_progress(output, summary)
    progress_file = progress_path(output)
    progress_file.unlink(missing_ok=True)  # never an earlier run's
    reporter = ProgressReporter(tracker, progress, progress_file, plan.progress_interval_s, log)
    state = FAILED  # unless the loop below ends
    http = rollout_client(plan.rollout_timeout_s, plan.max_attempts)
    tune_garbage_collector()
    started = time.monotonic()
    in_a_row = ConsecutiveFailures(plan.max_consecutive_failures)
    try:
        reporter.start()
        async with http:
            tasks = tracker.count_started(task for task in iter_tasks(plan.source) if task.key not in done)
            async for outcome in run_rollouts(http, plan.agent_urls, tasks, plan.num_samples_in_parallel, stop):
                if outcome.ok:
                    assert outcome.row is not None
                    writer.write(outcome.row)
                    summary.add(outcome.row)
                    in_a_row.finished()
                else:
                    assert outcome.failure is not None
                    summary.add_failure(outcome.failure.failure_class)
                    if failure_writer is None:
                        failure_writer = JsonlAppender(failures)
                    failure_writer.write(outcome.failure_record())
                    if in_a_row.failed(outcome.failure) and not stop.is_set():
                        print(f"\n{in_a_row.message()}", file=log)
                        stop.set()
                tracker.ended(outcome)
                progress.update(1)
            state = STOPPED if stop.is_set() else FINISHED
            if stop.is_set():
                left = summary.expected - summary.already_done - summary.finished - summary.failed
                print(
                    f"\nng_collect_rollouts: stopping: cancelling the rollouts in flight; {left} not run "
                    "(run the same command to collect them)",
                    file=log,
                )
    except asyncio.CancelledError:
        state = STOPPED
        raise
    finally:
        tracker.end(state)
        await reporter.stop()
        progress.close()
        writer.close()
        if failure_writer is not None:
            failure_writer.close()
        wall = time.monotonic() - started
        summary_path(output).write_bytes(
            orjson.dumps(summary.as_dict(wall), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )
        reporter.write()  # the final state, once the files it counts are closed
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


def _check(plan: CollectPlan, done: set[RolloutKey]) -> TaskCheck:
    return check_run(plan.source, plan.agent_urls, done)


def _begin_progress(output: Path, summary: Summary) -> CollectProgress:
    """The run's progress, beginning with what the output already holds (its rewards in the mean, as in the
    summary)."""
    tracker = CollectProgress(output=output)
    rewards = summary.fields.get("reward")
    tracker.begin(
        summary.expected, summary.already_done, rewards.count if rewards else 0, rewards.total if rewards else 0.0
    )
    return tracker
