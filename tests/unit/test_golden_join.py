"""Golden replay's join of example rows with recorded rollouts: image URLs count, and rows that ask the same thing
join on the recorded `_ng_task_index`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ngym.nemo_gym_envs.golden import golden_cases


def _params(text: str, image: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": text}]
    if image is not None:
        content.insert(0, {"type": "input_image", "image_url": image})
    return {"input": [{"role": "user", "content": content}]}


def _write(folder: Path, examples: list[dict[str, Any]], rollouts: list[dict[str, Any]]) -> Path:
    folder.mkdir()
    (folder / "example.jsonl").write_bytes(b"\n".join(orjson.dumps(row) for row in examples) + b"\n")
    (folder / "example_rollouts.jsonl").write_bytes(b"\n".join(orjson.dumps(row) for row in rollouts) + b"\n")
    return folder


def test_rows_differing_only_in_their_image_join_their_own_rollouts(tmp_path: Path) -> None:
    examples = [
        {"responses_create_params": _params("count", "data:a")},
        {"responses_create_params": _params("count", "data:b")},
    ]
    rollouts = [
        {"responses_create_params": _params("count", "data:b"), "response": {"output": []}, "reward": 0.0},
        {"responses_create_params": _params("count", "data:a"), "response": {"output": []}, "reward": 1.0},
    ]
    cases = golden_cases(_write(tmp_path / "data", examples, rollouts))
    assert [(case.index, case.reward) for case in cases] == [(0, 1.0), (1, 0.0)]


def test_rows_asking_the_same_join_on_the_recorded_task_index(tmp_path: Path) -> None:
    examples = [{"responses_create_params": _params("play"), "seed": seed} for seed in (1, 2, 3)]
    rollouts = [
        {
            "responses_create_params": _params("play"),
            "response": {"output": []},
            "reward": float(index),
            "_ng_task_index": index,
        }
        for index in (2, 0, 1)
    ]
    cases = golden_cases(_write(tmp_path / "data", examples, rollouts))
    assert [(case.index, case.reward, case.request["seed"]) for case in cases] == [
        (0, 0.0, 1),
        (1, 1.0, 2),
        (2, 2.0, 3),
    ]
