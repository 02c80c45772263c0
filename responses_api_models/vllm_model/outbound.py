"""The configured settings on every request sent to vLLM, decided once at start-up.

Precedence, lowest first, as in NeMo Gym: `chat_template_kwargs` and `extra_body` from the config, then the same
keys in the request's `metadata` (a JSON object, or its JSON text, per row: e.g. thinking on for some samples),
then the request's own fields; `sampling_overrides` over everything; the token-data flags last, so that nothing
can switch off what training needs.
"""

from __future__ import annotations

from typing import Any

import orjson

from ngym.protocol.errors import ConversionError
from ngym.protocol.shapes import JSON
from ngym.protocol.tokens import add_token_request_flags
from responses_api_models.vllm_model.config import VllmModelConfig

METADATA_KEYS = ("chat_template_kwargs", "extra_body")


class Outbound:
    def __init__(self, config: VllmModelConfig, *, token_flags: bool) -> None:
        self.chat_template_kwargs: JSON = dict(config.chat_template_kwargs or {})
        self.extra_body: JSON = dict(config.extra_body or {})
        self.sampling_overrides: JSON = dict(config.sampling_overrides or {})
        self.token_flags = token_flags
        self.inline_ids = config.request_prompt_and_generation_token_ids

    def apply(self, payload: JSON) -> JSON:
        """`payload` (our own copy) with the settings applied."""
        template_kwargs, extra_body = self.chat_template_kwargs, self.extra_body
        metadata = payload.get("metadata")
        if isinstance(metadata, dict) and any(metadata.get(key) for key in METADATA_KEYS):
            template_kwargs = {**template_kwargs, **_metadata_object(metadata, "chat_template_kwargs")}
            extra_body = {**extra_body, **_metadata_object(metadata, "extra_body")}
        caller_kwargs = payload.get("chat_template_kwargs")
        if template_kwargs:
            if caller_kwargs is not None and not isinstance(caller_kwargs, dict):
                raise ConversionError("must be an object", "chat_template_kwargs")
            payload["chat_template_kwargs"] = {**template_kwargs, **(caller_kwargs or {})}
        for key, value in extra_body.items():
            payload.setdefault(key, value)
        if self.sampling_overrides:
            payload.update(self.sampling_overrides)
        if self.token_flags:
            add_token_request_flags(payload, self.inline_ids)
        elif "top_logprobs" in payload and payload["top_logprobs"] is None:
            del payload["top_logprobs"]  # vLLM reads a null as "no log-probs", unlike an absent field
        return payload


def _metadata_object(metadata: JSON, key: str) -> JSON:
    value: Any = metadata.get(key)
    if not value:
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ConversionError(f"is not valid JSON ({exc})", f"metadata.{key}") from None
    if not isinstance(value, dict):
        raise ConversionError("must be a JSON object (or its text)", f"metadata.{key}")
    return value
