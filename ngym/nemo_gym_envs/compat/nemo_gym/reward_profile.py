"""Metrics over verify responses for /aggregate_metrics, and the helpers environments' `compute_metrics` use.

Behaves as NeMo Gym 0.7.0's `reward_profile` does (checked in tests/unit/test_nemo_gym_reward_profile.py):
baseline statistics (`mean|max|min|median|std/<field>`, std with n-1 and 0 for a single value) of every numeric
field not starting with `_` (and of `response.usage`'s numbers) per task and over all rollouts; masked samples
(`mask_sample`) left out of every quality statistic and reported as `coverage/*` only when there are some;
pass@k (combinatorial for 0/1 scores, best of the first k otherwise), pass@1[avg-of-k], majority@k (ties
averaged), `per_sample_aggregate` and the spread across runs, all in percent. Not provided: repeat-level
metrics, the group entries' `sample` and `rollout_infos`, `perf_summary`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Callable
from typing import Any

from .config_types import AggregateMetrics

TASK_INDEX = "_ng_task_index"
ROLLOUT_INDEX = "_ng_rollout_index"
MASK_SAMPLE = "mask_sample"
PER_SAMPLE = "per_sample_aggregate"
STD_DEV_ACROSS_RUNS = "/std_dev_across_runs"
STD_ERR_ACROSS_RUNS = "/std_err_across_runs"
AVG_SAMPLE_STD_DEV = "/avg_sample_std_dev"
_SPREAD_SUFFIXES = (STD_DEV_ACROSS_RUNS, STD_ERR_ACROSS_RUNS, AVG_SAMPLE_STD_DEV)


def _sample_std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


STATS: dict[str, Callable[[list[float]], float]] = {
    "mean": statistics.fmean,
    "max": max,
    "min": min,
    "median": statistics.median,
    "std": _sample_std,
}
Scores = dict[str, float]
ScoreFn = Callable[[dict[str, Any]], dict[str, Any]]


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return None


def numeric_fields(row: dict[str, Any]) -> dict[str, float | int]:
    """What the profiler measures of one verify response: its numbers (booleans as 0/1) whose names do not start
    with `_`, and the numbers of `response.usage`."""
    usage = (row.get("response") or {}).get("usage") or {}
    merged = {**row, **(usage if isinstance(usage, dict) else {})}
    found = {}
    for key, value in merged.items():
        number = _number(value)
        if number is not None and not key.startswith("_") and key not in ("reward", "response", MASK_SAMPLE):
            found[key] = number
    reward = _number(row.get("reward"))
    return {"reward": reward, **found} if reward is not None else found


def baseline_stats(rows: list[dict[str, Any]]) -> dict[str, float]:
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in numeric_fields(row).items():
            columns.setdefault(key, []).append(value)
    return {f"{stat}/{key}": fn(values) for stat, fn in STATS.items() for key, values in columns.items()}


def _pass_at_k(total: int, wrong: int, k: int) -> float:
    """The chance that k of `total` samples, `wrong` of them wrong, hold a right one."""
    return 1.0 if wrong < k else 1.0 - math.comb(wrong, k) / math.comb(total, k)


def _task_scores(rollouts: list[dict[str, Any]], score: ScoreFn, answer_key: str | None) -> list[Scores]:
    scores = []
    for row in rollouts:
        named = {name: int(value) if isinstance(value, bool) else value for name, value in score(row).items()}
        if answer_key is not None:
            named["no_answer"] = 1 if row.get(answer_key) is None else 0
        scores.append(named)
    return scores


def _majority(scored: list[tuple[Any, float]]) -> float:
    """Majority vote over (answer, score) pairs with an answer; tied pairs are averaged; none is 0."""
    if not scored:
        return 0.0
    counted = Counter(scored)
    top = max(counted.values())
    tied = [pair_score for (_, pair_score), count in counted.items() if count == top]
    return sum(tied) / len(tied)


def _percent_mean(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values)


def compute_pass_majority_metrics(
    tasks: list[list[dict[str, Any]]], score_fn: ScoreFn | None = None, answer_key: str | None = None
) -> tuple[dict[str, Any], list[list[Scores]], list[str], int]:
    """`{mode}/{score}` metrics in percent (pass@k, pass@1[avg-of-k], majority@k with answer_key, and
    `no_answer` as a score when answer_key is given), `per_sample_aggregate`, and the spread across runs."""
    if not tasks:
        return {}, [], [], 0
    score = score_fn or (lambda row: {"accuracy": row["reward"]})
    all_scores = [_task_scores(rollouts, score, answer_key) for rollouts in tasks]
    answers = [[row.get(answer_key) for row in rollouts] if answer_key else [] for rollouts in tasks]
    names = sorted({name for task in all_scores for scores in task for name in scores})
    max_k = max(len(rollouts) for rollouts in tasks)
    metrics: dict[str, Any] = {}
    for k in range(1, max_k + 1):
        for name in names:
            passes, firsts, majorities = [], [], []
            for task, task_answers in zip(all_scores, answers, strict=True):
                values = [scores[name] for scores in task if name in scores]
                if values and k <= len(values):
                    binary = all(value in (0, 1) for value in values)
                    wrong = sum(1 for value in values if not value)
                    passes.append(_pass_at_k(len(values), wrong, k) if binary else max(values[:k]))
                first_k = [scores[name] for scores in task[:k] if name in scores]
                if first_k:
                    firsts.append(sum(first_k) / len(first_k))
                if answer_key is not None:
                    pairs = zip(task_answers[:k], task[:k], strict=False)
                    majorities.append(_majority([(a, s[name]) for a, s in pairs if a is not None and name in s]))
            if passes:
                metrics[f"pass@{k}/{name}"] = _percent_mean(passes)
            if firsts:
                metrics[f"pass@1[avg-of-{k}]/{name}"] = _percent_mean(firsts)
            if majorities:
                metrics[f"majority@{k}/{name}"] = _percent_mean(majorities)
    per_sample: dict[str, list[float]] = {}
    for run in range(max_k):
        for name in names:
            run_scores = [task[run][name] for task in all_scores if run < len(task) and name in task[run]]
            if run_scores:
                per_sample.setdefault(name, []).append(_percent_mean(run_scores))
    metrics[PER_SAMPLE] = per_sample
    for k in range(2, max_k + 1):
        for name in names:
            runs = per_sample.get(name, [])[:k]
            if len(runs) >= 2:
                spread = statistics.stdev(runs)
                metrics[f"pass@1[avg-of-{k}]/{name}{STD_DEV_ACROSS_RUNS}"] = spread
                metrics[f"pass@1[avg-of-{k}]/{name}{STD_ERR_ACROSS_RUNS}"] = spread / math.sqrt(len(runs))
    return metrics, all_scores, names, max_k


def add_avg_sample_std_dev(
    metrics: dict[str, Any], all_score_dicts: list[list[Scores]], score_names: list[str], max_k: int
) -> None:
    """Add, for each k >= 2, the mean over tasks of the sample std of a task's first k scores."""
    for k in range(2, max_k + 1):
        for name in score_names:
            spreads = []
            for task in all_score_dicts:
                values = [scores[name] for scores in task[:k] if name in scores]
                if len(values) >= 2:
                    spreads.append(statistics.stdev(values))
            if spreads:
                metrics[f"pass@1[avg-of-{k}]/{name}{AVG_SAMPLE_STD_DEV}"] = sum(spreads) / len(spreads)


def compute_subset_metrics(
    tasks: list[list[dict[str, Any]]], subset_key: str, score_fn: ScoreFn | None = None,
    answer_key: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """compute_pass_majority_metrics per value of `subset_key` (a task's first rollout that has it), keys
    prefixed `{subset}/`."""
    subsets: dict[Any, list[list[dict[str, Any]]]] = {}
    for rollouts in tasks:
        value = next((row[subset_key] for row in rollouts if row.get(subset_key)), None)
        if value:
            subsets.setdefault(value, []).append(rollouts)
    metrics: dict[str, Any] = {}
    for subset, subset_tasks in subsets.items():
        found, _, _, _ = compute_pass_majority_metrics(subset_tasks, score_fn=score_fn, answer_key=answer_key)
        metrics.update({f"{subset}/{key}": value for key, value in found.items() if key != PER_SAMPLE})
    return metrics


def highest_k_metrics(
    agent_metrics: dict[str, Any], pattern: str, score_names: list[str] | None = None,
    exclude_names: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The entries matching `pattern` (with `{k}`) at the highest k found, spread statistics left out."""
    regex = re.compile("^" + re.escape(pattern).replace(r"\{k\}", r"(\d+)") + "/(.+)$")
    matches = []
    for key in agent_metrics:
        found = regex.match(key)
        if not found or found.group(2).endswith(_SPREAD_SUFFIXES):
            continue
        name = found.group(2)
        if (score_names is not None and name not in score_names) or (exclude_names and name in exclude_names):
            continue
        matches.append((int(found.group(1)), key))
    if not matches:
        return {}
    top = max(k for k, _ in matches)
    return {key: agent_metrics[key] for k, key in matches if k == top}


class AggregateMetricsMixin:
    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        return {}

    def compute_repeat_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        return {}

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in agent_metrics.items() if key.startswith("mean/")}


def group_by_task(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows by task index (ascending), each task's rows in the order given."""
    grouped: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row.get(TASK_INDEX, 0), []).append(row)
    return [grouped[index] for index in sorted(grouped)]


def coverage_metrics(all_rows: list[dict[str, Any]], scored: list[dict[str, Any]]) -> dict[str, Any]:
    """How much of the run the quality metrics cover; empty when nothing was masked."""
    masked = len(all_rows) - len(scored)
    if not masked:
        return {}
    measured_tasks = {row.get(TASK_INDEX, 0) for row in scored}
    all_tasks = {row.get(TASK_INDEX, 0) for row in all_rows}
    return {
        "coverage/measured_rollouts": len(scored),
        "coverage/masked_rollouts": masked,
        "coverage/measured_tasks": len(measured_tasks),
        "coverage/fully_masked_tasks": len(all_tasks - measured_tasks),
    }


def _group_entry(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        TASK_INDEX: rows[0].get(TASK_INDEX, 0),
        **baseline_stats(rows),
        "num_rollouts": len(rows),
        "expected_num_rollouts": len(rows),
        "missing_num_rollouts": 0,
        "reward_profile_completion_pct": 100.0,
    }


def compute_aggregate_metrics(
    verify_responses: list[dict[str, Any]], compute_metrics_fn: Any = None, get_key_metrics_fn: Any = None,
    compute_repeat_metrics_fn: Any = None,
) -> AggregateMetrics:  # fmt: skip
    """/aggregate_metrics' answer: per task, over the run, and the headline metrics."""
    if not verify_responses:
        return AggregateMetrics()
    scored = [row for row in verify_responses if not row.get(MASK_SAMPLE)]
    coverage = coverage_metrics(verify_responses, scored)
    if not scored:
        return AggregateMetrics(agent_metrics=dict(coverage), key_metrics=dict(coverage))
    ordered = sorted(scored, key=lambda row: (row.get(TASK_INDEX, 0), row.get(ROLLOUT_INDEX, 0)))
    groups = [_group_entry(rows) for rows in group_by_task(ordered)]
    agent = {**baseline_stats(ordered), **coverage}
    if compute_metrics_fn is not None:
        custom = dict(compute_metrics_fn(group_by_task(scored)) or {})
        per_task = {entry[TASK_INDEX]: entry for entry in custom.pop("per_task_metrics", None) or []}
        for group in groups:
            group.update({k: v for k, v in per_task.get(group[TASK_INDEX], {}).items() if k != TASK_INDEX})
        agent.update(custom)
    agent["num_repeats"] = len({row.get(ROLLOUT_INDEX, 0) for row in verify_responses})
    if get_key_metrics_fn is not None:
        key = dict(get_key_metrics_fn(agent))
    else:
        key = {k: v for k, v in agent.items() if k.startswith("mean/")}
    key.update(coverage)
    return AggregateMetrics(group_level_metrics=groups, agent_metrics=agent, key_metrics=key)
