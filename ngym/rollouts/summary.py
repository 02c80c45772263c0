"""Running statistics of numeric fields (reward first), in constant memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldStats:
    count: int = 0
    total: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


@dataclass
class Summary:
    expected: int
    already_done: int = 0
    finished: int = 0
    failed: int = 0
    failed_by_class: dict[str, int] = field(default_factory=dict)
    fields: dict[str, FieldStats] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def add(self, row: dict[str, Any]) -> None:
        self.finished += 1
        self._add_fields(row)

    def add_earlier(self, row: dict[str, Any]) -> None:
        """A row an earlier run (ours or NeMo Gym's) left in the output: counted, and in the field stats."""
        self.already_done += 1
        self._add_fields(row)

    def _add_fields(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            # Underscored keys (_ng_task_index, _ng_rollout_index) are bookkeeping, not measurements.
            if isinstance(value, int | float) and not isinstance(value, bool) and not key.startswith("_"):
                self.fields.setdefault(key, FieldStats()).add(float(value))

    def add_failure(self, failure_class: str) -> None:
        self.failed += 1
        self.failed_by_class[failure_class] = self.failed_by_class.get(failure_class, 0) + 1

    def ordered_fields(self) -> list[tuple[str, FieldStats]]:
        return sorted(self.fields.items(), key=lambda kv: (kv[0] != "reward", kv[0]))

    @property
    def missing(self) -> int:
        """Rollouts neither finished nor failed: not run (a stop), never lost."""
        return self.expected - self.already_done - self.finished - self.failed

    @property
    def mean_reward(self) -> float | None:
        stats = self.fields.get("reward")
        return stats.mean if stats and stats.count else None

    def as_dict(self, wall_seconds: float) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "already_done": self.already_done,
            "finished": self.finished,
            "failed": self.failed,
            "failed_by_class": dict(sorted(self.failed_by_class.items())),
            "missing": self.missing,
            "wall_seconds": round(wall_seconds, 3),
            "rollouts_per_second": round(self.finished / wall_seconds, 3) if wall_seconds > 0 else None,
            "fields": {
                key: {"count": s.count, "mean": s.mean, "min": s.minimum, "max": s.maximum}
                for key, s in self.ordered_fields()
            },
        }

    def _classes(self) -> str:
        if not self.failed_by_class:
            return ""
        return " (" + ", ".join(f"{name} {count}" for name, count in sorted(self.failed_by_class.items())) + ")"

    def table(self, wall_seconds: float) -> str:
        data = self.as_dict(wall_seconds)
        lines = [
            f"rollouts: expected {self.expected}, finished {self.finished}"
            + (f" (+{self.already_done} from earlier runs)" if self.already_done else "")
            + f", failed {self.failed}{self._classes()}, missing {data['missing']}",
            f"wall time {wall_seconds:.1f} s, {data['rollouts_per_second'] or 0:.2f} rollouts/s",
        ]
        if self.fields:
            width = max(len(key) for key in self.fields)
            lines.append(f"{'field'.ljust(width)}  {'count':>7}  {'mean':>10}  {'min':>10}  {'max':>10}")
            for key, s in self.ordered_fields():
                lines.append(
                    f"{key.ljust(width)}  {s.count:>7}  {s.mean:>10.4f}  {s.minimum:>10.4f}  {s.maximum:>10.4f}"
                )
        if self.failed:
            scored = self.finished + self.already_done
            lines.append(f"note: means are over the {scored} finished rollouts; {self.failed} failed")
        return "\n".join(lines)
