"""Our `nemo_gym.reward_profile` computes what NeMo Gym 0.7.0's does for the same verify responses: the expected
numbers below are worked out by hand from NeMo Gym's definitions (pass@k combinatorial over all of a task's
rollouts, pass@1[avg-of-k] over the first k even of a shorter task, majority@k over (answer, score) pairs with
ties averaged and no answer scored 0, spread across runs with n-1), on mcqa's metric hooks."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from ngym.nemo_gym_envs.compat.nemo_gym.reward_profile import (
    add_avg_sample_std_dev,
    compute_aggregate_metrics,
    compute_pass_majority_metrics,
    highest_k_metrics,
)

# (reward, extracted answer) per rollout of each task; task 2 has a single rollout.
TASKS = [[(1.0, "A"), (0.0, "B"), (0.0, "B")], [(1.0, "C"), (1.0, "C"), (0.0, None)], [(0.0, "D")]]


def rows() -> list[dict[str, Any]]:
    return [
        {"_ng_task_index": task, "_ng_rollout_index": rollout, "reward": reward, "extracted_answer": answer}
        for task, rollouts in enumerate(TASKS)
        for rollout, (reward, answer) in enumerate(rollouts)
    ]


def tasks() -> list[list[dict[str, Any]]]:
    return [[row for row in rows() if row["_ng_task_index"] == task] for task in range(len(TASKS))]


# mcqa's own hooks (resources_servers/mcqa/app.py, 0.7.0).
def mcqa_compute_metrics(grouped: list[list[dict[str, Any]]]) -> dict[str, Any]:
    scores = compute_pass_majority_metrics(grouped, lambda r: {"accuracy": r["reward"]}, "extracted_answer")
    return scores[0]


def mcqa_key_metrics(agent: dict[str, Any]) -> dict[str, Any]:
    key = {"mean/reward": agent["mean/reward"]} if "mean/reward" in agent else {}
    key.update(highest_k_metrics(agent, "pass@1[avg-of-{k}]", score_names=["accuracy", "no_answer"]))
    key.update(highest_k_metrics(agent, "pass@{k}", score_names=["no_answer"]))
    key.update(highest_k_metrics(agent, "majority@{k}", score_names=["accuracy"]))
    if "pass@1/accuracy" in agent:
        key["pass@1/accuracy"] = agent["pass@1/accuracy"]
    return key


def test_pass_at_k_avg_of_k_and_majority_at_k_are_nemo_gyms() -> None:
    metrics, _, names, max_k = compute_pass_majority_metrics(
        tasks(), lambda r: {"accuracy": r["reward"]}, "extracted_answer"
    )
    assert names == ["accuracy", "no_answer"] and max_k == 3
    expected = {
        "pass@1/accuracy": 100 * (1 / 3 + 2 / 3 + 0) / 3,  # 1 - C(wrong,1)/C(n,1) per task
        "pass@2/accuracy": 100 * (2 / 3 + 1) / 2,  # task 2 has fewer than 2 rollouts: left out
        "pass@3/accuracy": 100.0,
        "pass@1[avg-of-1]/accuracy": 100 * 2 / 3,
        "pass@1[avg-of-2]/accuracy": 100 * (0.5 + 1 + 0) / 3,  # task 2 counts with its one rollout
        "pass@1[avg-of-3]/accuracy": 100 * (1 / 3 + 2 / 3 + 0) / 3,
        "majority@1/accuracy": 100 * 2 / 3,
        "majority@2/accuracy": 100 * (0.5 + 1 + 0) / 3,  # task 0: A (1) and B (0) tie: averaged
        "majority@3/accuracy": 100 * (0 + 1 + 0) / 3,  # task 1: the missing answer does not vote
        "pass@1/no_answer": 100 * (0 + 1 / 3 + 0) / 3,
        "majority@3/no_answer": 0.0,
    }
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    runs = [100 * 2 / 3, 50.0, 0.0]  # rollout i of every task that has one
    assert metrics["per_sample_aggregate"]["accuracy"] == pytest.approx(runs)
    assert metrics["pass@1[avg-of-3]/accuracy/std_dev_across_runs"] == pytest.approx(statistics.stdev(runs))
    assert metrics["pass@1[avg-of-2]/accuracy/std_err_across_runs"] == pytest.approx(
        statistics.stdev(runs[:2]) / 2**0.5
    )


def test_avg_sample_std_dev_takes_max_k_and_names_each_k() -> None:
    metrics, scores, names, max_k = compute_pass_majority_metrics(tasks())
    add_avg_sample_std_dev(metrics, scores, names, max_k)
    task0, task1 = statistics.stdev([1, 0, 0]), statistics.stdev([1, 1, 0])
    assert metrics["pass@1[avg-of-3]/accuracy/avg_sample_std_dev"] == pytest.approx((task0 + task1) / 2)
    assert metrics["pass@1[avg-of-2]/accuracy/avg_sample_std_dev"] == pytest.approx(
        (statistics.stdev([1, 0]) + 0.0) / 2
    )


def test_aggregate_metrics_with_mcqas_hooks() -> None:
    answered = rows()
    for row in answered:
        row["response"] = {"usage": {"output_tokens": 10 + row["_ng_rollout_index"]}}
        row["_ng_private"] = 7  # names starting with _ are not measured
    result = compute_aggregate_metrics(answered, mcqa_compute_metrics, mcqa_key_metrics)
    agent = result.agent_metrics
    rewards = [reward for rollouts in TASKS for reward, _ in rollouts]
    assert agent["mean/reward"] == pytest.approx(statistics.fmean(rewards))
    assert agent["std/reward"] == pytest.approx(statistics.stdev(rewards))
    assert agent["median/reward"] == 0.0 and agent["max/reward"] == 1.0
    assert agent["mean/output_tokens"] == pytest.approx(statistics.fmean([10, 11, 12, 10, 11, 12, 10]))
    assert not any("_ng_private" in key or "mask_sample" in key for key in agent)
    assert not any(key.startswith("coverage/") for key in agent)  # nothing masked: no coverage keys
    assert agent["num_repeats"] == 3
    assert result.key_metrics == {
        "mean/reward": agent["mean/reward"],
        "pass@1[avg-of-3]/accuracy": agent["pass@1[avg-of-3]/accuracy"],
        "pass@1[avg-of-3]/no_answer": agent["pass@1[avg-of-3]/no_answer"],
        "pass@3/no_answer": agent["pass@3/no_answer"],
        "majority@3/accuracy": agent["majority@3/accuracy"],
        "pass@1/accuracy": agent["pass@1/accuracy"],
    }
    groups = result.group_level_metrics
    assert [g["_ng_task_index"] for g in groups] == [0, 1, 2]
    assert groups[1]["mean/reward"] == pytest.approx(2 / 3)
    assert groups[2]["std/reward"] == 0.0 and groups[2]["num_rollouts"] == 1


def test_masked_samples_are_left_out_and_reported_as_coverage() -> None:
    answered = rows()
    for row in answered:
        row["mask_sample"] = row["_ng_task_index"] == 2 or (row["_ng_task_index"], row["_ng_rollout_index"]) == (1, 2)
    result = compute_aggregate_metrics(answered, mcqa_compute_metrics, mcqa_key_metrics)
    coverage = {
        "coverage/measured_rollouts": 5,
        "coverage/masked_rollouts": 2,
        "coverage/measured_tasks": 2,
        "coverage/fully_masked_tasks": 1,
    }
    assert {key: result.agent_metrics[key] for key in coverage} == coverage
    assert {key: result.key_metrics[key] for key in coverage} == coverage
    assert result.agent_metrics["mean/reward"] == pytest.approx(3 / 5)
    assert [g["_ng_task_index"] for g in result.group_level_metrics] == [0, 1]


def test_every_rollout_masked_gives_coverage_only() -> None:
    answered = [{**row, "mask_sample": True} for row in rows()]
    result = compute_aggregate_metrics(answered, mcqa_compute_metrics, mcqa_key_metrics)
    assert result.agent_metrics == result.key_metrics
    assert result.agent_metrics["coverage/measured_rollouts"] == 0
    assert result.group_level_metrics == []
