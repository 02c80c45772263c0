"""The row keys NeMo Gym's rollout files use: trainers group samples by them and resume keys on them."""

from __future__ import annotations

from typing import Any

TASK_INDEX = "_ng_task_index"
ROLLOUT_INDEX = "_ng_rollout_index"
AGENT_REF = "agent_ref"
AGENT_TYPE = "responses_api_agents"
PARAMS = "responses_create_params"

RolloutKey = tuple[int, int]


def agent_ref(name: str) -> dict[str, str]:
    return {"type": AGENT_TYPE, "name": name}


def rollout_key(row: dict[str, Any]) -> RolloutKey | None:
    """(task, rollout) of a row, or None when it has no whole-number pair of them."""
    task, rollout = row.get(TASK_INDEX), row.get(ROLLOUT_INDEX)
    if isinstance(task, int) and isinstance(rollout, int) and is_index(task) and is_index(rollout):
        return task, rollout
    return None


def is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
