"""A collection's progress while it runs: counts, rates, mean reward and ETA, as one small JSON snapshot for a
trainer or a dashboard (`<output stem>.progress.json`, replaced atomically every few seconds) and as the text
beside ng_collect_rollouts' progress bar.

Per rollout the collector only adds to counters (`CollectProgress.ended`); everything that costs more (the
recent rate, the snapshot, the bar's text, the file) is done a few times a second at most, by
`ProgressReporter` or whoever asks for a snapshot. The snapshot holds counts, times, the output's path and the
pid: never a row, an error message, a secret or the command line.

The schema (`"schema": "ngym.collect_progress"`, `"version": 1`; a field is only ever added within a version):

    state            "running", then "finished" (every rollout ran), "stopped" (Ctrl-C, SIGTERM, too many failures
                     in a row, the caller's stop) or "failed" (an error ended the run); "pending" before it began
    pid, output      the collecting process; the output file (null from the Python API)
    started_at, updated_at   seconds since the epoch; elapsed_s: seconds since the start (monotonic clock)
    expected         rollouts in the whole run, those resumed included
    done             rollouts in the output: resumed (there when this run began) + finished (by this run)
    failed, failed_by_class  rollouts of this run that failed (in <output>.failures.jsonl), by class
    in_flight        started and not ended (0 once the run ended)
    remaining        expected - done - failed: not run yet (after a stop: not run by this run)
    rate             {"recent", "overall", "window_s"}: rollouts ended (finished or failed) per second, over the
                     last window_s seconds (at least; from the snapshots taken) and since the start
    reward           {"mean", "count"}: the mean reward over every scored row in the output (resumed included)
    eta_s            remaining / the recent rate; 0 when finished; null when unknown or the run ended otherwise
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

import orjson

from ngym.rollouts.engine import Outcome

SCHEMA = "ngym.collect_progress"
VERSION = 1
PENDING, RUNNING, FINISHED, STOPPED, FAILED = "pending", "running", "finished", "stopped", "failed"
ENDED_STATES = frozenset({FINISHED, STOPPED, FAILED})
RATE_WINDOW_S = 30.0
DEFAULT_INTERVAL_S = 2.0  # the progress file's, ng_collect_rollouts' +progress_interval_s
BAR_TICK_S = 0.25  # the bar's text is rebuilt at most this often

T = TypeVar("T")
Clock = Callable[[], float]


def progress_path(output: Path) -> Path:
    """`out.jsonl` -> `out.progress.json`, beside `out.summary.json` and `out.failures.jsonl`."""
    return output.with_name(output.stem + ".progress.json")


class CollectProgress:
    """Counts of one collection and the clock they are read against. `begin` once the run knows its size, then
    `ended` for every outcome, `end` with the final state; `snapshot()` at any time (each call is also a sample
    of the recent rate). Clocks are injectable for tests: `clock` monotonic, `wall_clock` the epoch's."""

    def __init__(
        self,
        *,
        output: Path | None = None,
        window_s: float = RATE_WINDOW_S,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        pid: int | None = None,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.output = output
        self.window_s = window_s
        self._clock = clock
        self._wall_clock = wall_clock
        self.pid = os.getpid() if pid is None else pid
        self.state = PENDING
        self.expected = 0
        self.resumed = 0
        self.finished = 0
        self.failed = 0
        self.failed_by_class: dict[str, int] = {}
        self.started_rollouts = 0
        self.reward_count = 0
        self.reward_total = 0.0
        self._started = 0.0
        self._started_at = 0.0
        self._ended: float | None = None
        self._samples: deque[tuple[float, int]] = deque()  # (monotonic time, rollouts ended) for the recent rate

    def begin(
        self, expected: int, resumed: int = 0, resumed_reward_count: int = 0, resumed_reward_total: float = 0.0
    ) -> None:
        """The run starts: `expected` rollouts in all, `resumed` of them already in the output (with their
        rewards' count and sum, so that the mean is over the whole output as the summary's is). Whatever an
        earlier run counted on this object is forgotten."""
        self.expected, self.resumed = expected, resumed
        self.reward_count, self.reward_total = resumed_reward_count, resumed_reward_total
        self.finished = self.failed = self.started_rollouts = 0
        self.failed_by_class = {}
        self._start_clock()
        self.state = RUNNING

    def _start_clock(self) -> None:
        self._started, self._started_at = self._clock(), self._wall_clock()
        self._samples = deque([(self._started, 0)])
        self._ended = None

    def count_started(self, tasks: Iterable[T]) -> Iterator[T]:
        """`tasks`, counting each one as started when the engine takes it (it starts it at once)."""
        for task in tasks:
            self.started_rollouts += 1
            yield task

    def ended(self, outcome: Outcome) -> None:
        """One rollout ended (as written: its row to the output, or its failure). Counters only."""
        failure = outcome.failure
        if failure is None:
            self.finished += 1
            reward = outcome.row.get("reward") if outcome.row is not None else None
            if isinstance(reward, int | float) and not isinstance(reward, bool):
                self.reward_count += 1
                self.reward_total += reward
        else:
            self.failed += 1
            name = failure.failure_class
            self.failed_by_class[name] = self.failed_by_class.get(name, 0) + 1

    def end(self, state: str) -> None:
        """The run ended in `state` (finished, stopped or failed); the clock stops, so later snapshots agree."""
        if state not in ENDED_STATES:
            raise ValueError(f"not a final state: {state!r}")
        if self.state == PENDING:  # ended before it began (e.g. an error reading the first task)
            self._start_clock()
        self.state = state
        self._ended = self._clock()

    @property
    def done(self) -> int:
        return self.resumed + self.finished

    @property
    def remaining(self) -> int:
        return max(0, self.expected - self.done - self.failed)

    @property
    def mean_reward(self) -> float | None:
        return self.reward_total / self.reward_count if self.reward_count else None

    def snapshot(self) -> dict[str, Any]:
        """The schema in the module's docstring, as of now (or of the end, once the run ended)."""
        running = self.state == RUNNING
        now = self._clock() if self._ended is None else self._ended
        elapsed = now - self._started if self.state != PENDING else 0.0
        ended = self.finished + self.failed
        recent = self._recent_rate(now, ended) if self.state != PENDING else 0.0
        overall = ended / elapsed if elapsed > 0 else 0.0
        remaining = self.remaining
        if self.state == FINISHED:
            eta: float | None = 0.0
        elif running and recent > 0:
            eta = round(remaining / recent, 1)
        else:
            eta = None
        updated_at = self._wall_clock() if self._ended is None else self._started_at + elapsed
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "state": self.state,
            "pid": self.pid,
            "output": str(self.output) if self.output is not None else None,
            "started_at": round(self._started_at, 3) if self.state != PENDING else None,
            "updated_at": round(updated_at, 3),
            "elapsed_s": round(elapsed, 3),
            "expected": self.expected,
            "done": self.done,
            "resumed": self.resumed,
            "finished": self.finished,
            "failed": self.failed,
            "failed_by_class": dict(sorted(self.failed_by_class.items())),
            "in_flight": max(0, self.started_rollouts - ended) if running else 0,
            "remaining": remaining,
            "rate": {"recent": round(recent, 3), "overall": round(overall, 3), "window_s": self.window_s},
            "reward": {"mean": self.mean_reward, "count": self.reward_count},
            "eta_s": eta,
        }

    def _recent_rate(self, now: float, ended: int) -> float:
        """Rollouts ended per second since the newest sample at least `window_s` old (or the start)."""
        samples = self._samples
        if samples[-1][0] < now:
            samples.append((now, ended))
        elif len(samples) > 1:  # a second snapshot at the same instant
            samples[-1] = (now, ended)
        cutoff = now - self.window_s
        while len(samples) > 1 and samples[1][0] <= cutoff:
            samples.popleft()
        since, then = samples[0]
        return (ended - then) / (now - since) if now > since else 0.0

    def bar_text(self) -> str:
        """The progress bar's postfix: `reward=0.512, failed model=3 verify=1` (tqdm shows rate and ETA)."""
        parts = [] if self.reward_count == 0 else [f"reward={self.reward_total / self.reward_count:.3f}"]
        if self.failed:
            parts.append("failed " + " ".join(f"{name}={n}" for name, n in sorted(self.failed_by_class.items())))
        else:
            parts.append("failed=0")
        return ", ".join(parts)


def write_progress_file(path: Path, snapshot: dict[str, Any]) -> None:
    """`snapshot` as `path`, whole or not at all: written beside it, then renamed over it (a reader never
    sees half a file). The temporary name is the writer's own (its pid), and it is removed if anything fails."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = orjson.dumps(snapshot, option=orjson.OPT_INDENT_2) + b"\n"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class Bar(Protocol):
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...


class ProgressReporter:
    """While the run goes: the bar's text every `BAR_TICK_S`, the progress file (when `path` is set) every
    `interval_s`, first at once; `stop(final=True)` writes the final state. A file that cannot be written is
    reported once on `log` and never stops the collection."""

    def __init__(
        self,
        progress: CollectProgress,
        bar: Bar | None,
        path: Path | None,
        interval_s: float,
        log: TextIO,
        clock: Clock = time.monotonic,
    ) -> None:
        self.progress = progress
        self.bar = bar
        self.path = path if interval_s > 0 else None
        self.interval_s = interval_s
        self.log = log
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    def start(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self.progress.bar_text(), refresh=False)
        self.write()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        tick = min(BAR_TICK_S, self.interval_s) if self.path is not None else BAR_TICK_S
        next_write = self._clock() + self.interval_s
        while True:
            await asyncio.sleep(tick)
            if self.bar is not None:
                self.bar.set_postfix_str(self.progress.bar_text(), refresh=False)
            if self.path is not None and self._clock() >= next_write:
                self.write()
                next_write = self._clock() + self.interval_s

    async def stop(self) -> None:
        """No more updates; the bar's text brought up to date. Then `write()` the final state."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.bar is not None:
            self.bar.set_postfix_str(self.progress.bar_text(), refresh=False)

    def write(self) -> None:
        if self.path is None:
            return
        try:
            write_progress_file(self.path, self.progress.snapshot())
        except OSError as exc:
            if not self._warned:
                self._warned = True
                print(f"\nng_collect_rollouts: warning: cannot write {self.path}: {exc}", file=self.log)
