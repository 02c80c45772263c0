"""Durable rollout output: one whole JSON line per finished rollout, flushed as it finishes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

META_KEY = "_ngym"  # {"task_index", "repeat_index"}: identifies a rollout for resuming


def failures_path(output: Path) -> Path:
    return output.with_name(output.stem + ".failures" + output.suffix)


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + ".summary.json")


def repair_partial_line(path: Path) -> int:
    """Cut a trailing partial line left by a crash (never merged with new rows); return bytes removed."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return 0
        # Scan back to the last newline.
        block = 1 << 16
        position = size
        cut = 0
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            chunk = handle.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                cut = start + newline + 1
                break
            position = start
        handle.truncate(cut)
        return size - cut


def done_keys(path: Path) -> Iterator[tuple[int, int]]:
    """The (task, repeat) of each whole row already in an output file."""
    if not path.is_file():
        return
    with path.open("rb") as lines:
        for line in lines:
            try:
                meta = orjson.loads(line).get(META_KEY) or {}
                yield int(meta["task_index"]), int(meta["repeat_index"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue


class JsonlAppender:
    """Appends whole lines; each write is one os.write of a complete line, so a crash leaves whole lines."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle: IO[bytes] = path.open("ab", buffering=0)

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")

    def close(self) -> None:
        self._handle.close()
