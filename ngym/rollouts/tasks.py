"""Task rows from a JSONL file: checked in a streaming pass first, then streamed again for the run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ngym.config.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Task:
    index: int  # 0-based position in the task stream (file rows in order, blank lines skipped, wrapping at +limit)
    repeat: int
    row: dict[str, Any]

    @property
    def key(self) -> tuple[int, int]:
        return self.index, self.repeat


def check_input(path: Path, limit: int | None) -> int:
    """Validate every row that will be used, without keeping them; return how many tasks the run has.

    With +limit larger than the file, the rows are used again from the start until limit tasks are taken."""
    rows = sum(1 for _ in _rows(path, limit))
    if rows == 0:
        raise ConfigError(f"{path}: no task rows")
    return rows if limit is None else limit


def iter_tasks(
    path: Path, limit: int | None, num_repeats: int, params_override: dict[str, Any] | None
) -> Iterator[Task]:
    """Each task num_repeats times in a row (abc -> aabbcc), with params_override merged into its
    responses_create_params."""
    index = 0
    while limit is None or index < limit:
        for _line_no, row in _rows(path, None if limit is None else limit - index):
            if params_override:
                row = {**row, "responses_create_params": {**row["responses_create_params"], **params_override}}
            for repeat in range(num_repeats):
                yield Task(index, repeat, row)
            index += 1
        if limit is None:
            return


def _rows(path: Path, limit: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise ConfigError(f"input file not found: {path}")
    used = 0
    with path.open("rb") as lines:
        for line_no, line in enumerate(lines, start=1):
            if limit is not None and used >= limit:
                return
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{line_no}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{line_no}: a row must be a JSON object, got {type(row).__name__}")
            if not isinstance(row.get("responses_create_params"), dict):
                raise ConfigError(f"{path}:{line_no}: the row has no 'responses_create_params' object")
            used += 1
            yield line_no, row
