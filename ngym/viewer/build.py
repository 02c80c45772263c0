"""The first pass over a large file, spread over worker processes: each indexes a piece of the file, and the
pieces are put together in file order as they come back, so rows appear from the top while the rest is read."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import signal
import sys
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ngym.viewer.index import RowIndex
from ngym.viewer.rows import BUILTIN_NUMBERS, failure_facts, rollout_facts

PIECE_BYTES = 32 << 20  # below two pieces, one process is as quick as starting workers
KINDS = {"rollouts": (rollout_facts, BUILTIN_NUMBERS), "failures": (failure_facts, ())}


def new_index(path: Path, kind: str) -> RowIndex:
    facts, numbers = KINDS[kind]
    return RowIndex(path, facts, numbers)


def index_piece(path: str, kind: str, start: int, end: int) -> RowIndex:
    """A worker's job: the rows of bytes [start, end)."""
    index = new_index(Path(path), kind)
    index.index_range(start, end)
    return index


def pieces(path: Path, start: int, end: int, piece_bytes: int = PIECE_BYTES) -> list[tuple[int, int]]:
    """[start, end) cut into ranges of about piece_bytes that each end just after a newline."""
    cuts = [start]
    with path.open("rb") as handle:
        while cuts[-1] + piece_bytes < end:
            handle.seek(cuts[-1] + piece_bytes)
            window = b""
            position = cuts[-1] + piece_bytes
            while b"\n" not in window and position + len(window) < end:
                window += handle.read(1 << 16)
            newline = window.find(b"\n")
            if newline < 0 or position + newline + 1 >= end:
                break
            cuts.append(position + newline + 1)
    cuts.append(end)
    return list(itertools.pairwise(cuts))


def workers() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


def executor(count: int | None = None) -> Executor:
    # spawn, not fork: the server's process has an event loop (and maybe threads) a fork would copy mid-flight.
    return ProcessPoolExecutor(
        max_workers=count or workers(), mp_context=multiprocessing.get_context("spawn"), initializer=_quiet_worker
    )


def _quiet_worker() -> None:
    """Ctrl-C in the terminal reaches the workers too: the server stops them, without a traceback each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def build(
    index: RowIndex, kind: str, *, parallel: bool = True, pool: Executor | None = None, piece_bytes: int = PIECE_BYTES
) -> None:
    """Index what the file holds now, in parallel when it is large (two pieces or more); appends after that are
    `step()`'s."""
    index.step()  # the first chunk at once: the first page does not wait for the workers
    if not parallel or not index.exists or index.size - index.position < 2 * piece_bytes:
        return
    epoch, end = index.epoch, index.size
    last_newline = _last_newline_before(index.path, end)
    if last_newline <= index.position:
        return
    ranges = pieces(index.path, index.position, last_newline, piece_bytes)
    count = min(workers(), len(ranges))
    own_pool = pool is None
    pool = pool or executor(count)
    loop = asyncio.get_running_loop()
    # A few pieces ahead of the one being absorbed, not all of them: finished pieces wait in this process's
    # memory until their turn comes.
    waiting: deque[asyncio.Future[RowIndex]] = deque()
    todo = iter(ranges)
    try:
        for start, stop in itertools.islice(todo, 2 * count):
            waiting.append(loop.run_in_executor(pool, index_piece, str(index.path), kind, start, stop))
        while waiting:
            part = await waiting.popleft()
            if index.epoch != epoch:  # the file was replaced meanwhile: step() indexes the new one
                break
            index.absorb(part)
            del part
            for start, stop in itertools.islice(todo, 1):
                waiting.append(loop.run_in_executor(pool, index_piece, str(index.path), kind, start, stop))
    except (BrokenProcessPool, OSError) as exc:
        # One process does the rest: slower, never wrong (step() goes on from the rows absorbed so far).
        print(f"ng_viewer: warning: parallel indexing stopped ({exc}); indexing in one process", file=sys.stderr)
    finally:
        for job in waiting:
            job.cancel()
        if own_pool:
            pool.shutdown(wait=False, cancel_futures=True)


def _last_newline_before(path: Path, end: int) -> int:
    """The offset just after the last newline in the file's first `end` bytes (0 if none)."""
    with path.open("rb") as handle:
        position = end
        while position > 0:
            start = max(0, position - (1 << 16))
            handle.seek(start)
            block = handle.read(position - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            position = start
    return 0
