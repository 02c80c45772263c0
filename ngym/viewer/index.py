"""One pass over a JSONL file: where each line starts, and the few facts the table needs, in compact columns.

Rows stay on disk and are read on demand by their offset, so memory grows by about a hundred bytes a row
whatever the rows hold. `step()` indexes the complete lines appended since the last call (a writer's partial
last line waits for its newline), so the same index follows a file that ng_collect_rollouts is still writing;
a file that is truncated, replaced or removed starts a new `epoch` and is indexed afresh.
"""

from __future__ import annotations

import math
import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ngym.viewer.rows import Facts

CHUNK_BYTES = 4 << 20
MAX_NUMBER_FIELDS = 64
MAX_LABEL_FIELDS = 64
MAX_LABEL_VALUES = 256  # more distinct values than this: the field is text (found by search), not a filter
MAX_BAD_LINES_KEPT = 20
NAN = math.nan
_TAIL = 32  # bytes before the indexed position, checked each step: a replaced file does not end the same way


class RowGone(Exception):
    """The row's bytes are no longer what was indexed (the file changed under the viewer)."""


class LabelColumn:
    """A low-cardinality field as one code per row; code 0 is "the row has no such field"."""

    __slots__ = ("codes", "lookup", "values")

    def __init__(self, rows: int) -> None:
        self.codes = array("H", bytes(2 * rows))
        self.values: list[str] = [""]
        self.lookup: dict[str, int] = {}

    def code(self, value: str) -> int | None:
        code = self.lookup.get(value)
        if code is None:
            if len(self.values) > MAX_LABEL_VALUES:
                return None
            code = self.lookup[value] = len(self.values)
            self.values.append(value)
        return code

    def counts(self, ids: Iterable[int] | None = None) -> dict[str, int]:
        codes = self.codes
        tally = Counter(codes if ids is None else (codes[i] for i in ids))
        return {value: tally[code] for code, value in enumerate(self.values) if code and tally[code]}


@dataclass(frozen=True)
class BadLine:
    line: int
    reason: str


class RowIndex:
    def __init__(
        self,
        path: Path,
        facts: Callable[[dict[str, Any]], Facts],
        numbers: tuple[str, ...] = (),
        *,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.path = path
        self._facts = facts
        self._builtin_numbers = numbers
        self.chunk_bytes = chunk_bytes
        self.epoch = 0
        self._reset()

    def _reset(self) -> None:
        self.epoch += 1
        self.rows = 0
        self.position = 0  # bytes indexed: always just after a newline
        self.size = 0
        self.exists = False
        self.lines = 0
        self._identity: tuple[int, int] | None = None
        self._tail = b""
        self.offsets = array("q")
        self.lengths = array("i")
        self.line_numbers = array("i")
        self.task = array("q")
        self.rollout = array("q")
        self.status = array("B")
        self.agent = array("H")
        self.agents: list[str] = [""]
        self._agent_codes: dict[str, int] = {"": 0}
        self.prompt = array("q")
        self.numbers: dict[str, array[float]] = {name: array("d") for name in self._builtin_numbers}
        self.labels: dict[str, LabelColumn] = {}
        self.text_fields: set[str] = set()  # too many values (or too many fields) to filter on
        self.bad_lines: list[BadLine] = []
        self.bad_count = 0

    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever what the index holds changes: cached answers key on it."""
        return self.epoch, self.rows

    @property
    def indexing(self) -> bool:
        return self.position < self.size

    def catch_up(self) -> None:
        """Index everything there is now (tools and tests; the server steps in the background)."""
        while self.step():
            pass

    def step(self) -> bool:
        """Index the complete lines appended since the last step, about `chunk_bytes` of them; True if any."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if self.exists or self.rows:
                self._reset()
            return False
        identity = (stat.st_dev, stat.st_ino)
        if self._identity is not None and (identity != self._identity or stat.st_size < self.position):
            self._reset()
        self._identity = identity
        self.exists = True
        self.size = stat.st_size
        if self.size <= self.position:
            return False
        with self.path.open("rb") as handle:
            handle.seek(self.position - len(self._tail))
            if handle.read(len(self._tail)) != self._tail:  # the same inode, written afresh
                self._reset()
                return True
            data = handle.read(self.chunk_bytes)
            cut = data.rfind(b"\n")
            while cut < 0 and len(data) < self.size - self.position:  # one line longer than a chunk
                more = handle.read(self.chunk_bytes)
                if not more:
                    break
                data += more
                cut = data.rfind(b"\n")
        if cut < 0:
            return False  # a partial last line: its writer has not finished it
        self._index_block(data, cut + 1)
        return True

    def _index_block(self, data: bytes, end: int) -> None:
        view = memoryview(data)
        loads = orjson.loads
        base = self.position
        start = 0
        while start < end:
            stop = data.find(b"\n", start, end)
            self.lines += 1
            if stop > start:
                try:
                    row = loads(view[start:stop])
                except orjson.JSONDecodeError as exc:
                    if data[start:stop].strip():
                        self._bad(f"not valid JSON ({exc})")
                else:
                    if isinstance(row, dict):
                        self._add(base + start, stop - start, self._facts(row))
                    else:
                        self._bad(f"a JSON {type(row).__name__}, not an object")
            start = stop + 1
        self.position = base + end
        self._tail = data[max(0, end - _TAIL) : end]

    def index_range(self, start: int, end: int) -> None:
        """Index the lines in [start, end) of the file, `start` at a line's beginning and `end` just after a
        newline: a worker's share of a parallel build; `absorb` puts it after the rows before it."""
        with self.path.open("rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
        self.position = start
        self._index_block(data, data.rfind(b"\n") + 1)

    def absorb(self, part: RowIndex) -> None:
        """Append the rows another index holds of the bytes right after this one's (see index_range)."""
        rows, lines = self.rows, self.lines
        self.offsets.extend(part.offsets)
        self.lengths.extend(part.lengths)
        self.task.extend(part.task)
        self.rollout.extend(part.rollout)
        self.status.extend(part.status)
        self.prompt.extend(part.prompt)
        self.line_numbers.extend(array("i", (line + lines for line in part.line_numbers)))
        agent_codes = [self._agent_code(name) for name in part.agents]
        self.agent.extend(array("H", (agent_codes[code] for code in part.agent)))
        for name in [*self.numbers, *(name for name in part.numbers if name not in self.numbers)]:
            values, theirs = self.numbers.get(name), part.numbers.get(name)
            if values is None:  # new in this part
                if name in self.text_fields or len(self.numbers) >= MAX_NUMBER_FIELDS:
                    self.text_fields.add(name)
                    continue
                values = self.numbers[name] = array("d", [NAN]) * rows
            values.extend(theirs if theirs is not None else array("d", [NAN]) * part.rows)
        for name in part.text_fields:
            self.labels.pop(name, None)
            self.text_fields.add(name)
        for name in [*self.labels, *(name for name in part.labels if name not in self.labels)]:
            self._absorb_labels(name, rows, part)
        for bad in part.bad_lines:
            if len(self.bad_lines) < MAX_BAD_LINES_KEPT:
                self.bad_lines.append(BadLine(bad.line + lines, bad.reason))
        self.bad_count += part.bad_count
        self.rows += part.rows
        self.lines += part.lines
        self.position = part.position
        self._tail = part._tail

    def _absorb_labels(self, name: str, rows: int, part: RowIndex) -> None:
        theirs = part.labels.get(name)
        column = self.labels.get(name)
        if column is None:
            if name in self.text_fields or len(self.labels) >= MAX_LABEL_FIELDS:
                self.text_fields.add(name)
                return
            column = self.labels[name] = LabelColumn(rows)
        if theirs is None:
            column.codes.extend(array("H", bytes(2 * part.rows)))
            return
        recode = [0, *(column.code(value) for value in theirs.values[1:])]
        if None in recode:
            del self.labels[name]
            self.text_fields.add(name)
            return
        column.codes.extend(array("H", (recode[code] for code in theirs.codes)))  # type: ignore[misc]

    def _agent_code(self, name: str) -> int:
        code = self._agent_codes.get(name)
        if code is None:
            code = self._agent_codes[name] = len(self.agents)
            self.agents.append(name)
        return code

    def _bad(self, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad_lines) < MAX_BAD_LINES_KEPT:
            self.bad_lines.append(BadLine(self.lines, reason))

    def _add(self, offset: int, length: int, facts: Facts) -> None:
        rows = self.rows
        self.offsets.append(offset)
        self.lengths.append(length)
        self.line_numbers.append(self.lines)
        self.task.append(facts.task)
        self.rollout.append(facts.rollout)
        self.status.append(facts.status)
        self.prompt.append(facts.prompt_key)
        self.agent.append(self._agent_code(facts.agent))

        numbers = facts.numbers
        matched = 0
        for name, column in self.numbers.items():
            value = numbers.get(name)
            if value is None:
                column.append(NAN)
            else:
                column.append(value)
                matched += 1
        if matched < len(numbers):
            for name, value in numbers.items():
                if name not in self.numbers and name not in self.text_fields:
                    self._new_number(name, rows, value)

        labels = facts.labels
        matched = 0
        for name, label_column in list(self.labels.items()):
            label = labels.get(name)
            if label is None:
                label_column.codes.append(0)
                continue
            matched += 1
            label_code = label_column.code(label)
            if label_code is None:
                del self.labels[name]
                self.text_fields.add(name)
            else:
                label_column.codes.append(label_code)
        if matched < len(labels):
            for name, label in labels.items():
                if name not in self.labels and name not in self.text_fields:
                    self._new_label(name, rows, label)
        self.rows = rows + 1

    def _new_number(self, name: str, rows: int, value: float) -> None:
        if len(self.numbers) >= MAX_NUMBER_FIELDS:
            self.text_fields.add(name)
            return
        column = array("d", [NAN]) * rows
        column.append(value)
        self.numbers[name] = column

    def _new_label(self, name: str, rows: int, value: str) -> None:
        if len(self.labels) >= MAX_LABEL_FIELDS:
            self.text_fields.add(name)
            return
        column = LabelColumn(rows)
        code = column.code(value)
        assert code is not None
        column.codes.append(code)
        self.labels[name] = column

    def read_raw(self, row_id: int) -> bytes:
        if not 0 <= row_id < self.rows:
            raise IndexError(row_id)
        with self.path.open("rb") as handle:
            handle.seek(self.offsets[row_id])
            return handle.read(self.lengths[row_id])

    def read(self, row_id: int) -> dict[str, Any]:
        try:
            row = orjson.loads(self.read_raw(row_id))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise RowGone(f"{self.path}: row {row_id} changed since it was indexed ({exc})") from None
        if not isinstance(row, dict):
            raise RowGone(f"{self.path}: row {row_id} changed since it was indexed")
        return row

    def first_of_task(self, task: int) -> int | None:
        try:
            return self.task.index(task)
        except ValueError:
            return None

    def memory_bytes(self) -> int:
        """What the columns hold (the benchmark reports it beside the process's RSS)."""
        columns: list[Any] = [
            self.offsets,
            self.lengths,
            self.line_numbers,
            self.task,
            self.rollout,
            self.status,
            self.agent,
            self.prompt,
            *self.numbers.values(),
        ]
        columns.extend(label.codes for label in self.labels.values())
        return sum(column.itemsize * len(column) for column in columns)
