"""What ng_viewer shows: the indexes of the rollout file, its failures and an optional file to compare, kept up
with the files as they grow (`Viewer.follow`), and the views the JSON API (api.py) answers from them."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ngym.config.secrets import redact
from ngym.http.app import HttpError
from ngym.rollouts.output import failures_path, summary_path
from ngym.rollouts.progress import progress_path
from ngym.viewer import stats
from ngym.viewer.build import build, new_index
from ngym.viewer.index import RowGone, RowIndex
from ngym.viewer.queries import Cache, Sources
from ngym.viewer.rows import STATUS_NAMES
from ngym.viewer.tokens import Vocab

POLL_S = 0.5


@dataclass(frozen=True)
class ViewerConfig:
    rollouts: Path
    compare: Path | None = None
    tokenizer: Vocab | None = None
    pass_threshold: float = 1.0
    parallel: bool = True
    label: str | None = None  # the file as the user named it (the page's title)
    gym_head: tuple[str, int] | None = None  # a running ng_run's head server (host, port): the page's Gym view


class Viewer:
    def __init__(self, config: ViewerConfig) -> None:
        self.config = config
        failures = failures_path(config.rollouts)
        self.sources = Sources(new_index(config.rollouts, "rollouts"), new_index(failures, "failures"))
        self.other = new_index(config.compare, "rollouts") if config.compare else None
        self.cache = Cache()
        self.problem: str | None = None
        self.progress = ProgressFile(progress_path(config.rollouts))

    @property
    def indexes(self) -> list[RowIndex]:
        return [self.sources.rollouts, self.sources.failures, *([self.other] if self.other else [])]

    async def follow(self) -> None:
        """Index the files, then keep up with what is appended to them. A file that cannot be read (or a bug)
        is shown on the page and retried; the server keeps serving what it has."""
        for index in (self.sources.rollouts, self.other):
            if index is not None:
                try:
                    await build(index, "rollouts", parallel=self.config.parallel)
                except Exception as exc:  # step() below indexes the rest in this process
                    self._report(f"indexing {index.path} in parallel failed: {type(exc).__name__}: {exc}")
        while True:
            progressed, problems = False, []
            for index in self.indexes:
                try:
                    progressed |= index.step()
                except Exception as exc:
                    problems.append(f"cannot index {index.path}: {type(exc).__name__}: {exc}")
            self._report("; ".join(problems) or None)
            await asyncio.sleep(0 if progressed else POLL_S)

    def _report(self, problem: str | None) -> None:
        if problem is not None and problem != self.problem:
            print(f"ng_viewer: warning: {problem}", file=sys.stderr, flush=True)
        self.problem = problem

    def status(self) -> dict[str, Any]:
        rollouts, failures, other = self.sources.rollouts, self.sources.failures, self.other
        versions = [*rollouts.version, *failures.version, *(other.version if other else ())]
        return {
            "file": self.config.label or str(self.config.rollouts),
            "exists": rollouts.exists,
            "rows": rollouts.rows,
            "failures": failures.rows,
            "bytes": rollouts.size,
            "indexed_bytes": rollouts.position,
            "indexing": rollouts.indexing or bool(other and other.indexing),
            "version": "-".join(map(str, versions)),
            "problem": self.problem,
            "compare": None if other is None else {"file": str(other.path), "rows": other.rows},
            "tokenizer": self.config.tokenizer.name if self.config.tokenizer else None,
            "pass_threshold": self.config.pass_threshold,
            "progress": self.progress.read(),
            "gym": self.config.gym_head is not None,
        }

    def fields(self) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            labels: dict[str, dict[str, int]] = {}
            for index in (self.sources.rollouts, self.sources.failures):
                for name, column in index.labels.items():
                    counts = labels.setdefault(name, {})
                    for value, count in column.counts().items():
                        counts[value] = counts.get(value, 0) + count
            rollouts, failures = self.sources.rollouts, self.sources.failures
            return {
                "numbers": self.sources.numeric_fields(),
                "labels": labels,
                "text_fields": sorted(rollouts.text_fields | failures.text_fields),
                "agents": sorted({name for index in (rollouts, failures) for name in index.agents if name}),
                "statuses": list(STATUS_NAMES),
            }

        return self.cache.get(("fields", self.sources.version), compute)

    def summary(self) -> dict[str, Any]:
        rollouts, failures = self.sources.rollouts, self.sources.failures
        file = summary_path(self.config.rollouts)
        return self.cache.get(
            ("summary", self.sources.version),
            lambda: stats.summary(rollouts, failures, file, self.config.pass_threshold, self.groups()),
        )

    def groups(self) -> dict[int, stats.Group]:
        rollouts = self.sources.rollouts
        return self.cache.get(("groups", rollouts.version), lambda: stats.groups(rollouts, self.config.pass_threshold))

    def locate(self, rid: str) -> tuple[RowIndex, int]:
        """The index and row number of `r<i>` (rollouts) or `f<j>` (failures)."""
        index = {"r": self.sources.rollouts, "f": self.sources.failures}.get(rid[:1])
        if index is None or not rid[1:].isdigit():
            raise HttpError(404, f"no row {rid!r}: rows are r<number> (rollouts) or f<number> (failures)", param="id")
        number = int(rid[1:])
        if number >= index.rows:
            raise HttpError(404, f"no row {rid}: {index.path} has {index.rows} rows indexed", param="id")
        return index, number

    def read(self, index: RowIndex, number: int) -> dict[str, Any]:
        """A row as the page may show it: a secret a row holds (`api_key`, `auth_header`, ...) is `***`."""
        try:
            row = index.read(number)
        except RowGone as exc:
            raise HttpError(409, f"{exc}; reload the page") from None
        shown = redact(row)
        assert isinstance(shown, dict)
        return shown


class ProgressFile:
    """The collector's `<output>.progress.json` beside the rollouts file (ngym.rollouts.progress), read again only
    when it changed: the page's live line shows its rate, ETA and state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._value: dict[str, Any] | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            stat = self.path.stat()
        except OSError:
            self._seen, self._value = None, None
            return None
        if (stat.st_mtime_ns, stat.st_size) != self._seen:
            try:
                value = orjson.loads(self.path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                return self._value  # replaced while read: the last one stands until the next look
            self._seen, self._value = (stat.st_mtime_ns, stat.st_size), value if isinstance(value, dict) else None
        return self._value
