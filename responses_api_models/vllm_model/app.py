"""vllm_model: the Responses and Chat Completions APIs in front of one or more vLLM servers.

Per request: convert (pure, ngym.protocol), complete the turn on the session's vLLM server (paths.py: one chat
completion; exact_path.py: render, generate, derender), convert back. The upstream client owns server choice,
retries and failover. Everything that can be computed once (headers, paths, option objects) is done at start-up.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import Response

from ngym.http.app import HttpError, json_response, read_json_object
from ngym.http.client import HttpClient, RetryPolicy, Timeouts
from ngym.protocol.answers import (
    chat_response_to_caller,
    chat_response_to_response,
    context_length_chat_response,
    context_length_response,
)
from ngym.protocol.errors import ConversionError
from ngym.protocol.options import ConversionOptions
from ngym.protocol.requests import chat_request_to_upstream, responses_to_chat_request
from ngym.protocol.tokens import TokenDataError, add_token_request_flags
from ngym.servers.base import ServerConfig, ServerContext, StartupError
from ngym.servers.model import ModelServer
from ngym.upstream.client import SESSION_HEADER, UpstreamClient
from ngym.upstream.pool import UPSTREAM_COOKIE, Session, Upstream, UpstreamPool, parse_session_cookie
from responses_api_models.vllm_model.exact_path import ExactTokenPath, template_settings
from responses_api_models.vllm_model.paths import ChatPath, Completion, CompletionPath
from responses_api_models.vllm_model.startup_checks import (
    SCALE_OUT_FLAG,
    check_served_model,
    missing_token_endpoints,
    token_endpoints_advice,
)

TokenExact = Literal["auto", "require", "never"]


class VllmModelConfig(ServerConfig):
    base_url: str | list[str] = Field(description="vLLM endpoint(s), each ending in /v1")
    api_key: SecretStr | None = None
    model: str
    return_token_id_information: bool = False
    # The token-exact path for training prompts (vLLM's --enable-scale-out endpoints): used when every server
    # has them (auto), demanded (require), or not used (never).
    token_exact: TokenExact = "auto"
    uses_reasoning_parser: bool = True
    replace_developer_role_with_system: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    extra_body: dict[str, Any] | None = None
    sampling_overrides: dict[str, Any] | None = None
    default_headers: dict[str, str] | None = None
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

    @model_validator(mode="after")
    def _check_token_exact(self) -> VllmModelConfig:
        if self.token_exact == "require" and not self.return_token_id_information:
            raise ValueError(
                "token_exact: require needs return_token_id_information: true (token-exact prompts are built from "
                "the token IDs each turn returns)"
            )
        return self

    @property
    def base_urls(self) -> list[str]:
        urls = [self.base_url] if isinstance(self.base_url, str) else self.base_url
        return [url.rstrip("/") for url in urls]


class VllmModel(ModelServer[VllmModelConfig]):
    config_model = VllmModelConfig

    @classmethod
    def http_client(cls, config: VllmModelConfig) -> HttpClient:
        return HttpClient(
            timeouts=Timeouts(total=config.request_timeout_s, connect=config.connect_timeout_s),
            retry=RetryPolicy(max_attempts=config.max_retries + 1, deadline=config.retry_deadline_s),
        )

    def __init__(self, config: VllmModelConfig, context: ServerContext) -> None:
        super().__init__(config, context)
        headers = dict(config.default_headers or {})
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.client = UpstreamClient(
            config.base_urls, self.http, headers, health_check_interval_s=config.health_check_interval_s
        )
        self.options = ConversionOptions(
            uses_reasoning_parser=config.uses_reasoning_parser,
            replace_developer_role_with_system=config.replace_developer_role_with_system,
            return_token_id_information=config.return_token_id_information,
        )
        self.chat_path = ChatPath(self.client, config.model, config.return_token_id_information)
        self.path: CompletionPath = self.chat_path

    @property
    def pool(self) -> UpstreamPool:
        return self.client.pool

    async def startup(self) -> None:
        config = self.config
        timeout = config.startup_check_timeout_s
        served = await asyncio.gather(
            *(check_served_model(self.client, u, config.model, timeout) for u in self.client.upstreams)
        )
        if config.return_token_id_information and config.token_exact != "never":
            self.path = await self._exact_path_if_served([s.max_model_len for s in served]) or self.path
        self.client.start()

    async def shutdown(self) -> None:
        await self.client.stop()

    async def _exact_path_if_served(self, max_model_lens: list[int | None]) -> ExactTokenPath | None:
        """The token-exact path when every server serves its endpoints; otherwise a warning (auto) or a refusal
        to start (require) naming the flag and each server without them."""
        upstreams = self.client.upstreams
        timeout = self.config.startup_check_timeout_s
        missing = await asyncio.gather(*(missing_token_endpoints(self.client, u, timeout) for u in upstreams))
        problems = [token_endpoints_advice(u, paths) for u, paths in zip(upstreams, missing, strict=True) if paths]
        problems += [
            f"the vLLM server at {u.shown} does not say its max_model_len in /v1/models, which the token-exact "
            "path needs to size each generation"
            for u, length in zip(upstreams, max_model_lens, strict=True)
            if length is None and not missing[u.index]
        ]
        path: ExactTokenPath | None = None
        if not problems:
            lengths = {u.index: length for u, length in zip(upstreams, max_model_lens, strict=True) if length}
            path = ExactTokenPath(self.client, self.config.model, lengths, first_turns=self.chat_path)
            settings = template_settings({"chat_template_kwargs": self.config.chat_template_kwargs})
            try:
                for upstream in upstreams:
                    await path.template(upstream, settings)
            except HttpError as exc:
                problems.append(exc.message)
                path = None
        if not problems:
            return path
        if self.config.token_exact == "require":
            raise StartupError("token_exact: require, but " + "; ".join(problems))
        self.warn(
            "; ".join(problems) + f". Using the chat path: prompt_token_ids are vLLM's re-rendering of the history "
            f"and may differ from the tokens of earlier turns (start vLLM with {SCALE_OUT_FLAG}, or set "
            "token_exact: never to silence this)."
        )
        return None

    # --- routes -------------------------------------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        body = await read_json_object(request)
        try:
            payload = responses_to_chat_request(body, self.config.model, self.options)
        except ConversionError as exc:
            raise HttpError(422, str(exc), param=exc.param) from None
        session = _session(request)
        done = await self.path.complete(self._apply_config(payload), session)
        if done.chat is None:
            answer = context_length_response(body, self.config.model)
        else:
            try:
                answer = chat_response_to_response(done.chat, body, self.options, done.prompt_token_ids)
            except TokenDataError as exc:
                raise _token_data_error(done, exc) from None
        return self._reply(answer, session, done.upstream)

    async def chat_completions(self, request: Request) -> Response:
        body = await read_json_object(request)
        try:
            payload = chat_request_to_upstream(body, self.config.model, self.options)
        except ConversionError as exc:
            raise HttpError(422, str(exc), param=exc.param) from None
        session = _session(request)
        done = await self.path.complete(self._apply_config(payload), session)
        if done.chat is None:
            answer = context_length_chat_response(self.config.model)
        else:
            try:
                answer = chat_response_to_caller(done.chat, self.options, done.prompt_token_ids)
            except TokenDataError as exc:
                raise _token_data_error(done, exc) from None
        return self._reply(answer, session, done.upstream)

    async def models(self, _request: Request) -> Response:
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "ngym"}
        return json_response({"object": "list", "data": [model]})

    # --- helpers ------------------------------------------------------------------------------------------

    def _apply_config(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The configured template kwargs, extra fields and sampling overrides; the token flags last, so that
        no override can switch off the log-probs training needs."""
        config = self.config
        if config.chat_template_kwargs:
            payload["chat_template_kwargs"] = {
                **config.chat_template_kwargs,
                **(payload.get("chat_template_kwargs") or {}),
            }
        if config.extra_body:
            for key, value in config.extra_body.items():
                payload.setdefault(key, value)
        if config.sampling_overrides:
            payload.update(config.sampling_overrides)
        if config.return_token_id_information:
            add_token_request_flags(payload)
        return payload

    def _reply(self, answer: dict[str, Any], session: Session, upstream: Upstream) -> Response:
        response = json_response(answer)
        if session.pinned != upstream.index:
            response.set_cookie(UPSTREAM_COOKIE, session.cookie_value(upstream.index), httponly=True, samesite="lax")
        return response


def _session(request: Request) -> Session:
    parsed = parse_session_cookie(request.cookies.get(UPSTREAM_COOKIE))
    if parsed is not None:
        return Session(parsed[0], parsed[1])
    header = request.headers.get(SESSION_HEADER)
    if header:
        return Session(header, None, from_header=True)
    return Session(secrets.token_hex(12), None)


def _token_data_error(done: Completion, exc: TokenDataError) -> HttpError:
    return HttpError(502, f"vLLM at {done.upstream.shown} returned unusable token data: {exc}")
