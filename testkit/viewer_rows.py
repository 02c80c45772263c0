"""Rollout rows shaped as ng_collect_rollouts writes them (simple_weather through simple_agent), for the
viewer's tests and its 1,000,000-row benchmark: deterministic, varied (rewards, incomplete rollouts, reasoning,
a second agent), with token IDs and log-probs when asked."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

CITIES = ("Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Dakar", "Minsk", "Perth", "Zürich", "Sofia")
WEATHER = ("sunny", "cloudy", "rainy", "windy", "cold", "warm")
SYSTEM = "You are a helpful personal assistant that aims to be helpful and reduce any pain points the user has."
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name."}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def _token_data(rng: random.Random, prompt_length: int, generated: int, low: bool = False) -> dict[str, Any]:
    log_probs = [-rng.random() * 0.05 for _ in range(generated)]
    if low and log_probs:
        log_probs[len(log_probs) // 2] = -4.0  # one unlikely token
    return {
        "prompt_token_ids": [rng.randrange(300) for _ in range(prompt_length)],
        "generation_token_ids": [rng.randrange(300) for _ in range(generated)],
        "generation_log_probs": log_probs,
    }


def weather_row(
    task: int,
    rollout: int,
    *,
    city: str,
    reward: float,
    seed: int = 0,
    tokens: bool = False,
    incomplete: bool = False,
    reasoning: str | None = None,
    agent: str = "simple_weather_simple_agent",
    answer: str | None = None,
) -> dict[str, Any]:
    """One finished rollout: a get_weather call, its output, and the answer (cut short when incomplete)."""
    rng = random.Random(seed * 1_000_003 + task * 1009 + rollout)
    weather = WEATHER[(task + rollout) % len(WEATHER)]
    called = city if reward > 0 else CITIES[(CITIES.index(city) + 1) % len(CITIES)] if city in CITIES else "Nowhere"
    call: dict[str, Any] = {
        "type": "function_call",
        "id": f"fc_{task}_{rollout}",
        "call_id": f"call_{task}_{rollout}",
        "name": "get_weather",
        "arguments": f'{{"city": "{called}"}}',
        "status": "completed",
    }
    output: list[dict[str, Any]] = []
    if reasoning is not None:
        output.append(
            {
                "type": "reasoning",
                "id": f"rs_{task}_{rollout}",
                "summary": [{"type": "summary_text", "text": reasoning}],
            }
        )
    output.append(call)
    if tokens:
        call.update(_token_data(rng, 180 + task % 7, 20 + rollout % 5))
    status, details = "completed", None
    if incomplete:
        status, details = "incomplete", {"reason": "max_output_tokens"}
    else:
        result = f'{{"city":"{called}","weather_description":"The weather in {called} is {weather}."}}'
        output.append({"type": "function_call_output", "call_id": call["call_id"], "output": result})
        text = answer if answer is not None else f"The weather in {called} is {weather}."
        message: dict[str, Any] = {
            "type": "message",
            "id": f"msg_{task}_{rollout}",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        if tokens:
            first = call
            carried = [*first["prompt_token_ids"], *first["generation_token_ids"]]
            extra = _token_data(rng, 40, 12 + rollout % 3, low=reward == 0)
            extra["prompt_token_ids"] = carried + extra["prompt_token_ids"]
            message.update(extra)
        output.append(message)
    params = {
        "input": [
            {"role": "developer", "content": SYSTEM},
            {"role": "user", "content": f"How's the weather in {city}?"},
        ],
        "tools": [TOOL],
    }
    return {
        "responses_create_params": params,
        "expected_city": city,
        "agent_ref": {"type": "responses_api_agents", "name": agent},
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        "response": {
            "id": f"resp_{task}_{rollout}",
            "object": "response",
            "created_at": 1_796_305_623,
            "model": "weather-policy",
            "status": status,
            "incomplete_details": details,
            "error": None,
            "output": output,
            "usage": {"input_tokens": 235 + task % 9, "output_tokens": 13 + rollout % 4, "total_tokens": 250},
            "tools": [TOOL],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
        },
        "reward": reward,
        "reason": "called get_weather for the right city and reported its answer"
        if reward > 0
        else "did not call get_weather for the city asked about",
        "called_city": called,
    }


def synthetic_rows(count: int, *, repeats: int = 4, seed: int = 0, tokens: bool = False) -> Iterator[dict[str, Any]]:
    """`count` rollouts, `repeats` per task: about 70% rewarded, every 50th incomplete, every 7th with reasoning,
    every 10th task by a second agent; tasks in order, rollouts of a task together."""
    rng = random.Random(seed)
    for n in range(count):
        task, rollout = divmod(n, repeats)
        skill = (task * 7919 % 10) / 10  # some tasks always pass, some never, most in between
        incomplete = n % 50 == 49
        reward = 1.0 if rng.random() < 0.4 + skill and not incomplete else 0.0
        yield weather_row(
            task,
            rollout,
            city=CITIES[task % len(CITIES)],
            reward=reward,
            seed=seed,
            tokens=tokens,
            incomplete=incomplete,
            reasoning="The user wants the weather; call the tool." if n % 7 == 3 else None,
            agent="weather_agent_b" if task % 10 == 9 else "simple_weather_simple_agent",
        )
