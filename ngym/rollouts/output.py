"""Durable rollout output: one whole JSON line per finished rollout, flushed as it finishes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

from ngym.config.errors import ConfigError
from ngym.rollouts.keys import ROLLOUT_INDEX, TASK_INDEX, RolloutKey, rollout_key

OLD_META_KEY = "_ngym"  # what ngym's rows carried before NeMo Gym's keys


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


def read_done(path: Path, on_row: Callable[[dict[str, Any]], None] | None = None) -> set[RolloutKey]:
    """The (task, rollout) of every row already in an output file (ours or NeMo Gym's), each row also given
    to `on_row`. A row that cannot say which rollout it is stops the run (resuming past it would collect that
    rollout twice), as does a rollout in the file twice."""
    done: dict[RolloutKey, int] = {}
    if not path.is_file():
        return set()
    with path.open("rb") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{line_no}: not valid JSON ({exc}); cannot resume this output") from None
            key = rollout_key(row) if isinstance(row, dict) else None
            if key is None:
                raise ConfigError(f"{path}:{line_no}: {_not_a_rollout(row)}")
            first = done.setdefault(key, line_no)
            if first != line_no:
                raise ConfigError(
                    f"{path}:{line_no}: task {key[0]}, rollout {key[1]} is already on line {first}: a rollout must "
                    "be in the output once; remove one of the two, or pass +overwrite=true to start afresh"
                )
            if on_row is not None:
                on_row(row)
    return set(done)


def _not_a_rollout(row: Any) -> str:
    fix = "write to another output, or pass +overwrite=true to start it afresh"
    if isinstance(row, dict) and OLD_META_KEY in row:
        return f"a row of an older ngym (`{OLD_META_KEY}`, not {TASK_INDEX}/{ROLLOUT_INDEX}): {fix}"
    return f"the row has no whole-number {TASK_INDEX} and {ROLLOUT_INDEX}, so it cannot be resumed: {fix}"


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
