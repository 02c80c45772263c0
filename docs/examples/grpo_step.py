"""One GRPO-style step with ngym's Python API: K rollouts per task, grouped by task, group-relative advantages.

python docs/examples/grpo_step.py    # against the gym of the seed's configs (env.yaml names your vLLM)
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ngym.api import Gym

CONFIG_PATHS = [
    "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
]
TASKS = Path("resources_servers/simple_weather/data/example.jsonl")


async def grpo_step(gym: Gym, tasks: Sequence[dict[str, Any]], k: int = 4) -> list[tuple[dict[str, Any], float]]:
    """(rollout row, advantage) for every rollout of every task whose group finished whole."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    async for outcome in gym.collect(tasks, num_repeats=k, responses_create_params={"temperature": 1.0}):
        if outcome.ok:
            assert outcome.row is not None
            groups[outcome.row["_ng_task_index"]].append(outcome.row)
    batch = []
    for rows in groups.values():
        if len(rows) < k:
            continue  # a failed rollout leaves its group short: skip the group rather than bias it
        rewards = [row["reward"] for row in rows]
        mean, spread = statistics.fmean(rewards), statistics.pstdev(rewards)
        batch += [(row, (row["reward"] - mean) / (spread + 1e-6)) for row in rows]
    return batch  # every advantage is 0 in a group whose rewards are all equal: no signal from it


async def main() -> None:
    tasks = [json.loads(line) for line in TASKS.read_text().splitlines() if line.strip()]
    agent = {"agent_ref": {"type": "responses_api_agents", "name": "simple_weather_simple_agent"}}
    async with Gym.start(config_paths=CONFIG_PATHS) as gym:
        batch = await grpo_step(gym, [{**task, **agent} for task in tasks])
    print(f"{len(batch)} rollouts, mean |advantage| {statistics.fmean(abs(a) for _, a in batch):.3f}")


if __name__ == "__main__":
    asyncio.run(main())
