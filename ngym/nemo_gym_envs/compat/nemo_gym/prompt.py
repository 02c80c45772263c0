"""Prompt templates kept in YAML files (`user`, optionally `system`, with `{field}` placeholders) and filled from a
data row, as NeMo Gym's judge environments load theirs (`load_prompt_config`, then `fill_prompt`).

A relative path is found under the working directory (the environment's folder) when it exists there, else
under the environment's tree, as NeMo Gym resolves its paths.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import yaml
from pydantic import BaseModel

from . import _resolve_under_cwd_or_install


class PromptConfig(BaseModel):
    user: str
    system: str | None = None


@lru_cache(maxsize=64)
def load_prompt_config(path: str) -> PromptConfig:
    """The prompt file at `path`, read and checked once per process."""
    with open(_resolve_under_cwd_or_install(path), encoding="utf-8") as handle:
        return PromptConfig.model_validate(yaml.safe_load(handle))


def fill_prompt(prompt_config: PromptConfig, row: dict[str, Any]) -> list[dict[str, str]]:
    """The messages (system first when there is one) with the row's top-level fields put in; `{{`/`}}` are braces."""
    try:
        messages = []
        if prompt_config.system is not None:
            messages.append({"role": "system", "content": prompt_config.system.format_map(row)})
        messages.append({"role": "user", "content": prompt_config.user.format_map(row)})
    except KeyError as missing:
        raise KeyError(f"the prompt names the field {missing}; the row has only {sorted(row)}") from None
    return messages


def validate_prompt_compatibility(rows: list[dict[str, Any]], prompt_config: PromptConfig) -> None:
    """A prompt file and rows that already hold `responses_create_params.input` exclude each other."""
    clashing = [index for index, row in enumerate(rows) if (row.get("responses_create_params") or {}).get("input")]
    if clashing:
        raise ValueError(
            "rows hold responses_create_params.input and a prompt_config is given; use one or the other "
            f"(rows {clashing})"
        )


def apply_prompt_to_row(row: dict[str, Any], prompt_config: PromptConfig) -> dict[str, Any]:
    """A copy of the row whose `responses_create_params.input` is the filled prompt (its other fields kept)."""
    params = row.get("responses_create_params")
    params = dict(params) if isinstance(params, dict) else {}
    params["input"] = fill_prompt(prompt_config, row)
    return {**row, "responses_create_params": params}
