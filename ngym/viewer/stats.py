"""The numbers over a whole file: summary, histograms, pass@k, groups of a task's rollouts, two files compared."""

from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ngym.viewer.index import RowIndex
from ngym.viewer.rows import COMPLETED, INCOMPLETE, STATUS_NAMES

HISTOGRAM_BINS = 20
HISTOGRAMS = ("reward", "output_tokens", "output_chars", "turns")


def histogram(values: Iterable[float], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Counts per bin: one bin per value for small whole numbers (turns, 0/1 rewards), else equal widths.
    (C-speed passes only: this runs over every row.)"""
    present = [value for value in values if value == value]
    if not present:
        return {"count": 0, "bins": []}
    low, high = min(present), max(present)
    mean = math.fsum(present) / len(present)
    if high - low < 2 * bins and sum(map(float.is_integer, present)) == len(present):
        tally = Counter(present)
        edges = [(low + k, low + k) for k in range(int(high - low) + 1)]
        counts = [tally.get(edge, 0) for edge, _ in edges]
    else:
        width = (high - low) / bins or 1.0
        edges = [(low + k * width, low + (k + 1) * width) for k in range(bins)]
        ordered = sorted(present)
        cuts = [0, *(bisect_left(ordered, upper) for _, upper in edges[:-1]), len(ordered)]
        counts = [b - a for a, b in itertools.pairwise(cuts)]
    return {
        "count": len(present),
        "mean": mean,
        "min": low,
        "max": high,
        "bins": [{"low": a, "high": b, "count": c} for (a, b), c in zip(edges, counts, strict=True)],
    }


def field_stats(values: Iterable[float]) -> dict[str, Any]:
    present = [value for value in values if value == value]
    if not present:
        return {"count": 0}
    return {"count": len(present), "mean": math.fsum(present) / len(present), "min": min(present), "max": max(present)}


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator: the chance that k of a task's n rollouts, c of which pass, include a pass."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass(slots=True)
class Group:
    task: int
    first: int  # the row to read the task's prompt from
    n: int = 0  # rollouts with a reward
    rows: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    passes: int = 0

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def spread(self) -> float:
        """Standard deviation of the rewards (population): what GRPO's advantages are scaled by."""
        if not self.n:
            return math.nan
        return math.sqrt(max(0.0, self.squares / self.n - self.mean**2))

    @property
    def zero_advantage(self) -> bool:
        """Every reward the same: the group teaches GRPO nothing."""
        return self.n >= 2 and self.low == self.high

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "rollouts": self.rows,
            "scored": self.n,
            "mean": self.mean,
            "spread": self.spread,
            "min": self.low if self.n else None,
            "max": self.high if self.n else None,
            "passes": self.passes,
            "zero_advantage": self.zero_advantage,
        }


def groups(index: RowIndex, threshold: float) -> dict[int, Group]:
    """Rollouts by `_ng_task_index` (rows without one are left out)."""
    found: dict[int, Group] = {}
    rewards = index.numbers.get("reward")
    tasks = index.task
    for i in range(index.rows):
        task = tasks[i]
        if task < 0:
            continue
        group = found.get(task)
        if group is None:
            group = found[task] = Group(task, i)
        group.rows += 1
        reward = rewards[i] if rewards is not None else math.nan
        if reward == reward:
            group.n += 1
            group.total += reward
            group.squares += reward * reward
            group.low = min(group.low, reward)
            group.high = max(group.high, reward)
            group.passes += reward >= threshold
    return found


def pass_at_k_table(found: Iterable[Group]) -> list[dict[str, Any]]:
    """pass@k averaged over the tasks with at least k scored rollouts, for k = 1, 2, 4, ... up to the most."""
    scored = [group for group in found if group.n]
    if not scored:
        return []
    most = max(group.n for group in scored)
    table, k = [], 1
    while k <= most:
        eligible = [group for group in scored if group.n >= k]
        value = math.fsum(pass_at_k(group.n, group.passes, k) for group in eligible) / len(eligible)
        table.append({"k": k, "pass_at_k": value, "tasks": len(eligible)})
        k = k * 2 if k * 2 <= most or k == most else most
    return table


def read_summary_file(path: Path) -> dict[str, Any] | None:
    """ng_collect_rollouts' `<output>.summary.json` (written when a run ends), or None."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def summary(
    rollouts: RowIndex, failures: RowIndex, summary_file: Path, threshold: float, found: dict[int, Group] | None = None
) -> dict[str, Any]:
    statuses = [rollouts.status.count(code) for code in range(len(STATUS_NAMES))]
    found = groups(rollouts, threshold) if found is None else found
    written = read_summary_file(summary_file)
    expected = written.get("expected") if written else None
    classes = failures.labels.get("class")
    numbers = {name: histogram(rollouts.numbers[name]) for name in HISTOGRAMS if name in rollouts.numbers}
    group_list = list(found.values())
    repeated = [group for group in group_list if group.n >= 2]
    return {
        "rollouts": rollouts.rows,
        "expected": expected if isinstance(expected, int) else None,
        "summary_file": written,
        "finished": rollouts.rows,
        "completed": statuses[COMPLETED],
        "incomplete": statuses[INCOMPLETE],
        "errors": statuses[STATUS_NAMES.index("error")],
        "failed": failures.rows,
        "failed_by_class": classes.counts() if classes is not None else {},
        "mean_reward": numbers["reward"].get("mean") if "reward" in numbers else None,
        "histograms": numbers,
        "fields": {name: field_stats(values) for name, values in rollouts.numbers.items()},
        "tasks": len(group_list),
        "tasks_with_repeats": len(repeated),
        "zero_advantage_tasks": sum(group.zero_advantage for group in repeated),
        "pass_threshold": threshold,
        "pass_at_k": pass_at_k_table(repeated),
        "agents": [name for name in rollouts.agents if name],
        "bad_lines": {
            "count": rollouts.bad_count + failures.bad_count,
            "first": [{"line": b.line, "reason": b.reason, "file": "rollouts"} for b in rollouts.bad_lines]
            + [{"line": b.line, "reason": b.reason, "file": "failures"} for b in failures.bad_lines],
        },
    }


GROUP_SORTS = ("task", "mean", "spread", "rollouts")


def group_rows(found: dict[int, Group], sort: str, descending: bool, only: str | None) -> list[Group]:
    chosen: Sequence[Group] = list(found.values())
    if only == "zero":
        chosen = [group for group in chosen if group.zero_advantage]
    elif only == "mixed":
        chosen = [group for group in chosen if group.n >= 2 and not group.zero_advantage]
    sign = -1.0 if descending else 1.0

    def key(group: Group) -> tuple[float, int]:
        value = (
            float(group.task)
            if sort == "task"
            else float(group.rows)
            if sort == "rollouts"
            else (group.mean if sort == "mean" else group.spread)
        )
        return (value * sign if value == value else math.inf, group.task)

    return sorted(chosen, key=key)


@dataclass(slots=True)
class Side:
    task: int
    first: int
    n: int = 0
    total: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan


def by_prompt(index: RowIndex) -> dict[int, Side]:
    sides: dict[int, Side] = {}
    rewards = index.numbers.get("reward")
    for i in range(index.rows):
        key = index.prompt[i]
        side = sides.get(key)
        if side is None:
            side = sides[key] = Side(index.task[i], i)
        reward = rewards[i] if rewards is not None else math.nan
        if reward == reward:
            side.n += 1
            side.total += reward
    return sides


@dataclass(frozen=True)
class Pair:
    key: int
    before: Side | None
    after: Side | None

    @property
    def delta(self) -> float:
        if self.before is None or self.after is None:
            return math.nan
        return self.after.mean - self.before.mean


def compare(before: RowIndex, after: RowIndex) -> list[Pair]:
    """The tasks of two files matched by their prompt (not by index: two runs may number tasks differently)."""
    a, b = by_prompt(before), by_prompt(after)
    return [Pair(key, a.get(key), b.get(key)) for key in dict.fromkeys([*a, *b])]


def compare_totals(pairs: Sequence[Pair]) -> dict[str, Any]:
    both = [pair for pair in pairs if pair.before is not None and pair.after is not None]
    scored = [pair for pair in both if pair.delta == pair.delta]
    return {
        "tasks_in_both": len(both),
        "only_before": sum(1 for pair in pairs if pair.after is None),
        "only_after": sum(1 for pair in pairs if pair.before is None),
        "improved": sum(1 for pair in scored if pair.delta > 0),
        "regressed": sum(1 for pair in scored if pair.delta < 0),
        "unchanged": sum(1 for pair in scored if pair.delta == 0),
        "mean_before": _mean([pair.before.mean for pair in scored if pair.before is not None]),
        "mean_after": _mean([pair.after.mean for pair in scored if pair.after is not None]),
    }


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None
