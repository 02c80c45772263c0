"""Run jobs a bounded number at once and hand back each result as it ends: the scheduling under the rollout
engine, apart from what a job is, so that its guarantees can be tested on any interleaving.

Guarantees, whatever finishes when:
- every started job's result is handed back exactly once, unless a stop or the consumer leaving cancelled it
  first; a job that ended before the stop was seen is always handed back;
- the loop returns once every item was started and every started job's result was handed back, or, after a
  stop, once what had ended was handed back and the rest was cancelled;
- a job holds its slot until its result is taken, so a slow consumer holds back new jobs.

The end is decided by what is outstanding (jobs started and not handed back), counted where results are taken:
never by a set that a done callback empties a loop step later.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


async def run_bounded(
    items: Iterable[Item],
    run: Callable[[Item], Awaitable[Result]],
    max_in_flight: int,
    stop: asyncio.Event,
) -> AsyncGenerator[Result, None]:
    """`run(item)` for each item, at most `max_in_flight` outstanding; each result in the order the jobs end.

    A stop (the event set by anyone, also while the consumer handles a result) is seen at once: no new job
    starts, what has ended is handed back, then the rest is cancelled. An error raised while reading `items` is
    raised after the jobs already started were handed back. Leaving the loop early cancels what is in flight."""
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
    outstanding: dict[asyncio.Future[Result], None] = {}  # started, result not yet taken (insertion-ordered)
    ended: deque[asyncio.Future[Result]] = deque()  # ended, in the order their done callbacks ran
    wake = asyncio.Event()  # set when a job ends or the stop is set

    def job_ended(job: asyncio.Future[Result]) -> None:
        ended.append(job)
        wake.set()

    stop_watch = asyncio.ensure_future(stop.wait())
    stop_watch.add_done_callback(lambda _: wake.set())
    source = iter(items)
    exhausted = False
    reading_error: BaseException | None = None
    try:
        while True:
            while not exhausted and len(outstanding) < max_in_flight and not stop.is_set():
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                except Exception as exc:  # raised once what was started has been handed back
                    exhausted, reading_error = True, exc
                    break
                started: asyncio.Future[Result] = asyncio.ensure_future(run(item))
                outstanding[started] = None
                started.add_done_callback(job_ended)
            if not outstanding or stop.is_set():
                break
            if not ended:
                wake.clear()
                await wake.wait()
                continue
            job = ended.popleft()
            del outstanding[job]
            yield job.result()
        if stop.is_set():
            for job in _ended_before_the_stop(outstanding, ended):
                del outstanding[job]
                yield job.result()
            cancelled = list(outstanding)
            for job in cancelled:
                job.cancel()
            await asyncio.gather(*cancelled, return_exceptions=True)
            for job in cancelled:  # one that was done before its cancellation reached it is handed back too
                del outstanding[job]
                if not job.cancelled() and job.exception() is None:
                    yield job.result()
        elif reading_error is not None:
            raise reading_error
    finally:
        stop_watch.cancel()
        for job in outstanding:
            job.cancel()
        await asyncio.gather(stop_watch, *outstanding, return_exceptions=True)


def _ended_before_the_stop(
    outstanding: dict[asyncio.Future[Result], None], ended: deque[asyncio.Future[Result]]
) -> list[asyncio.Future[Result]]:
    """The jobs that had ended when the stop was seen, in the order they ended; a job whose done callback has
    not run yet has ended too."""
    in_order = [job for job in ended if job in outstanding]
    seen = set(in_order)
    return in_order + [job for job in outstanding if job.done() and job not in seen]
