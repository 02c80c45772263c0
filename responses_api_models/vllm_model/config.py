"""The vllm_model configuration: every key of NeMo Gym's `vllm_model`, with the same meaning, and ngym's own.

Combinations NeMo Gym does not implement, and keys that would have no effect in the configuration given, are
refused here (`ng_run` reports them before starting anything), never accepted and ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from ngym.servers.base import ServerConfig

TokenExact = Literal["auto", "require", "never"]


class VllmModelConfig(ServerConfig):
    base_url: str | list[str] = Field(description="vLLM endpoint(s), each ending in /v1")
    api_key: SecretStr | None = None
    model: str
    return_token_id_information: bool = False
    # NeMo Gym's default is false (prompt IDs from /tokenize, a second request per turn); asking vLLM for them
    # inline gives the same IDs in one request.
    request_prompt_and_generation_token_ids: bool = True
    # The token-exact path for training prompts (vLLM's --enable-scale-out endpoints): used when every server
    # has them (auto), demanded (require), or not used (never).
    token_exact: TokenExact = "auto"
    uses_reasoning_parser: bool = True
    uses_interleaved_reasoning: bool = True
    preserve_reasoning_in_assistant_content: bool = False
    replace_developer_role_with_system: bool = False
    sequential_reasoning_allowed: bool = True
    is_responses_native: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    extra_body: dict[str, Any] | None = None
    sampling_overrides: dict[str, Any] | None = None
    default_headers: dict[str, str] | None = None
    audio_root: str | None = None
    use_completions_api: bool = False
    render_chat_template: bool = False
    tokenizer: str | None = None
    # POST /loglikelihood (NeMo Gym's vllm_loglikelihood keys); no max_context_tokens: vLLM's own context limit.
    max_context_tokens: int | None = Field(default=None, ge=2)
    likelihood_seed: int = 42
    likelihood_add_special_tokens: bool = False
    request_timeout_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    retry_deadline_s: float = Field(default=900.0, gt=0)
    startup_check_timeout_s: float = Field(default=10.0, gt=0)
    health_check_interval_s: float = Field(default=2.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _check_base_urls(cls, value: str | list[str]) -> str | list[str]:
        urls = [value] if isinstance(value, str) else value
        if not urls:
            raise ValueError("needs at least one URL")
        for url in urls:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL such as http://localhost:8000/v1")
            if not url.rstrip("/").endswith("/v1"):
                raise ValueError(f"{url!r} must end in /v1, e.g. {url.rstrip('/')}/v1")
        return value

    @field_validator("audio_root")
    @classmethod
    def _check_audio_root(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_dir():
            raise ValueError(f"{value!r} is not a directory (relative paths are from the directory ng_run runs in)")
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> VllmModelConfig:
        problems = _token_exact_problems(self) + _native_problems(self) + _completions_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def base_urls(self) -> list[str]:
        urls = [self.base_url] if isinstance(self.base_url, str) else self.base_url
        return [url.rstrip("/") for url in urls]


def _token_exact_problems(config: VllmModelConfig) -> list[str]:
    if config.token_exact != "require":
        return []
    if not config.return_token_id_information:
        return [
            "token_exact: require needs return_token_id_information: true (token-exact prompts are built from "
            "the token IDs each turn returns)"
        ]
    if config.use_completions_api:
        return ["token_exact: require is for the chat path; use_completions_api: true has no token-exact path"]
    return []


def _native_problems(config: VllmModelConfig) -> list[str]:
    """NeMo Gym has not implemented these with is_responses_native either: vLLM's own /v1/responses does the
    conversion, so neither token data nor ngym's history rewriting can be applied."""
    if not config.is_responses_native:
        return []
    unsupported = {
        "return_token_id_information: true": config.return_token_id_information,
        "replace_developer_role_with_system: true": config.replace_developer_role_with_system,
        "sequential_reasoning_allowed: false": not config.sequential_reasoning_allowed,
    }
    return [
        f"is_responses_native: true passes /v1/responses to vLLM's own, which cannot apply {key}"
        for key, on in unsupported.items()
        if on
    ]


def _completions_problems(config: VllmModelConfig) -> list[str]:
    problems: list[str] = []
    if config.render_chat_template and not config.use_completions_api:
        problems.append(
            "render_chat_template: true applies only with use_completions_api: true (the chat path has vLLM "
            "render the chat template itself)"
        )
    if config.tokenizer is not None and not (config.use_completions_api and config.render_chat_template):
        problems.append(
            "tokenizer names whose chat template renders prompts, which happens only with use_completions_api: "
            "true and render_chat_template: true"
        )
    return problems
