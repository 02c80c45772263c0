"""The openai_model configuration: every key of NeMo Gym's `openai_model`, with the same meaning, and ngym's own
timeouts and start-up check."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator

from ngym.servers.base import ServerConfig

# NeMo Gym's default number of attempts per request (its MAX_NUM_TRIES).
DEFAULT_HTTP_ATTEMPTS = 3


class OpenAIModelConfig(ServerConfig):
    openai_base_url: str = Field(description="the OpenAI-compatible API's base URL, e.g. https://api.openai.com/v1")
    # None (or empty): no Authorization header, as for a local vLLM started without --api-key.
    openai_api_key: SecretStr | None = None
    openai_model: str = Field(min_length=1, description="the model name sent with every request")
    extra_body: dict[str, Any] = Field(default_factory=dict)
    openai_default_headers: dict[str, str] = Field(default_factory=dict)
    max_http_attempts: int = Field(default=DEFAULT_HTTP_ATTEMPTS, ge=1)
    max_concurrent_requests: int | None = Field(default=None, ge=1)
    drop_input_reasoning_items: bool = False
    request_timeout_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # GET <openai_base_url>/models once at start-up: an unreachable server or a refused key stops ng_run before any
    # rollout instead of failing every judge call.
    startup_check: bool = True
    startup_check_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("openai_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL such as https://api.openai.com/v1")
        return value.rstrip("/")
