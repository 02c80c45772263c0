"""What a chaos run checks after killing servers during a collection (the tests' and `python -m benchmarks chaos`):
that every rollout ended exactly once, in the output or as an infrastructure failure, and whether a killed
replica is back."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ngym.api.process import NgRun
from ngym.http.probe import answers
from ngym.rollouts.failures import INVALID_TASK
from ngym.rollouts.keys import ROLLOUT_INDEX, TASK_INDEX
from ngym.rollouts.output import failures_path

RolloutKey = tuple[int, int]


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@dataclass(frozen=True)
class Accounting:
    """The output's rows and the failures file's, read once."""

    finished: list[dict[str, Any]]
    failed: list[dict[str, Any]]

    @classmethod
    def read(cls, output: Path) -> Accounting:
        return cls(_rows(output), _rows(failures_path(output)))

    def problems(self, wanted: Collection[RolloutKey]) -> list[str]:
        """Each way the files fail 'every rollout once, in the output or as an infrastructure failure'."""
        done = [(row[TASK_INDEX], row[ROLLOUT_INDEX]) for row in self.finished]
        failed = {(row[TASK_INDEX], row[ROLLOUT_INDEX]) for row in self.failed}
        found = []
        if len(done) != len(set(done)):
            found.append("a rollout was written twice")
        if set(done) & failed:
            found.append("a rollout is both in the output and in the failures file")
        if set(done) | failed != set(wanted) or len(done) + len(failed) != len(wanted):
            found.append(f"{len(done)} finished and {len(failed)} failed rollouts are not the {len(wanted)} wanted")
        if any(row["class"] == INVALID_TASK for row in self.failed):
            found.append("a kill was filed as the task's fault (invalid_task)")
        return found


def back(gym: NgRun, label: str, before: int, pids: set[int]) -> bool:
    """Whether the replica `label` restarted since (its restarts past `before`) and answers; its pid is noted."""
    now = gym.replicas()[label]
    pids.add(now["pid"])
    return bool(now["restarts"] > before and answers(now["url"]))
