"""Token usage of Responses API answers: NeMo Gym's usage types (counts a server did not report stay None) and
`accumulate_response_usage`, which agents use to sum the usage of a rollout's model calls."""

from __future__ import annotations

from typing import Any

from openai.types.responses import ResponseUsage
from pydantic import BaseModel, ConfigDict


class NeMoGymResponseInputTokensDetails(BaseModel):
    model_config = ConfigDict(extra="allow")  # other counts an SDK release adds are kept

    cached_tokens: int | None = None


class NeMoGymResponseOutputTokensDetails(BaseModel):
    model_config = ConfigDict(extra="allow")

    reasoning_tokens: int | None = None


class NeMoGymResponseUsage(ResponseUsage):
    input_tokens_details: NeMoGymResponseInputTokensDetails  # type: ignore[assignment]
    output_tokens_details: NeMoGymResponseOutputTokensDetails  # type: ignore[assignment]


def as_usage(value: Any) -> NeMoGymResponseUsage | None:
    """A usage as NeMoGymResponseUsage: from the SDK's type, a Responses dict, or the Chat Completions shape
    (`prompt_tokens`, `completion_tokens`) some model servers answer with. None when it is no usage."""
    if value is None:
        return None
    data = value.model_dump() if hasattr(value, "model_dump") else value
    if not isinstance(data, dict):
        raise TypeError(f"not a token usage: {type(value).__name__}")
    inputs = data.get("input_tokens", data.get("prompt_tokens", 0)) or 0
    outputs = data.get("output_tokens", data.get("completion_tokens", 0)) or 0
    input_details = data.get("input_tokens_details") or data.get("prompt_tokens_details") or {}
    output_details = data.get("output_tokens_details") or data.get("completion_tokens_details") or {}
    return NeMoGymResponseUsage(
        input_tokens=int(inputs),
        output_tokens=int(outputs),
        total_tokens=int(data.get("total_tokens") or inputs + outputs),
        input_tokens_details=NeMoGymResponseInputTokensDetails(cached_tokens=input_details.get("cached_tokens")),
        output_tokens_details=NeMoGymResponseOutputTokensDetails(
            reasoning_tokens=output_details.get("reasoning_tokens")
        ),
    )


def _add(left: int | None, right: int | None) -> int | None:
    """An unknown count stays unknown: it never becomes a measurement by addition."""
    return None if left is None or right is None else left + right


def accumulate_response_usage(total: Any, additional: Any) -> NeMoGymResponseUsage | None:
    """`total` plus `additional`, counts and details alike; either may be None (the other is returned)."""
    more = as_usage(additional)
    if more is None:
        return as_usage(total)
    base = as_usage(total)
    if base is None:
        return more
    return NeMoGymResponseUsage(
        input_tokens=base.input_tokens + more.input_tokens,
        output_tokens=base.output_tokens + more.output_tokens,
        total_tokens=base.total_tokens + more.total_tokens,
        input_tokens_details=NeMoGymResponseInputTokensDetails(
            cached_tokens=_add(base.input_tokens_details.cached_tokens, more.input_tokens_details.cached_tokens)
        ),
        output_tokens_details=NeMoGymResponseOutputTokensDetails(
            reasoning_tokens=_add(
                base.output_tokens_details.reasoning_tokens, more.output_tokens_details.reasoning_tokens
            )
        ),
    )
