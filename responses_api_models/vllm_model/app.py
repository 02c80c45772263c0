"""vllm_model: the Responses and Chat Completions APIs in front of one or more vLLM servers.

Per request: convert (pure, ngym.protocol), pick the session's vLLM server, one upstream call, convert back.
Everything that can be computed once (headers, URLs, option objects) is computed at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from typing import Any

import orjson
from pydantic import Field, SecretStr, field_validator
from starlette.requests import Request
from starlette.responses import Response

from ngym.http.app import HttpError, json_response, read_json_object
from ngym.http.client import NO_RETRY, HttpClient, RetryPolicy, Timeouts, UpstreamError, redact_url
from ngym.protocol.convert import (
    ConversionError,
    ConversionOptions,
    chat_request_to_upstream,
    chat_response_to_caller,
    chat_response_to_response,
    context_length_chat_response,
    context_length_response,
    needs_prompt_token_ids,
    responses_to_chat_request,
)
from ngym.protocol.tokens import TokenDataError
from ngym.servers.base import ServerConfig, ServerContext, StartupError
from ngym.servers.model import ModelServer
from ngym.upstream.pool import UPSTREAM_COOKIE, Session, Upstream, UpstreamPool, parse_session_cookie

SESSION_HEADER = "X-Session-ID"
# vLLM's answers for a prompt that does not fit the context (current, and older releases). Not "max_model_len":
# `max_tokens=N cannot be greater than max_model_len` is the caller's mistake and must stay an error.
CONTEXT_LENGTH_MARKERS = (b"maximum context length", b"is too long to fit into the model")


class VllmModelConfig(ServerConfig):
    base_url: str | list[str] = Field(description="vLLM endpoint(s), each ending in /v1")
    api_key: SecretStr | None = None
    model: str
    return_token_id_information: bool = False
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
        self.pool = UpstreamPool(config.base_urls)
        self.options = ConversionOptions(
            uses_reasoning_parser=config.uses_reasoning_parser,
            replace_developer_role_with_system=config.replace_developer_role_with_system,
            return_token_id_information=config.return_token_id_information,
        )
        headers = dict(config.default_headers or {})
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.upstream_headers = headers
        # With several servers a refused connection moves the session at once instead of retrying in place.
        # With several servers a refused or dropped connection moves the session at once instead of retrying
        # in place; 429/5xx answers are retried on the same server either way.
        self.upstream_retry = (
            dataclasses.replace(self.http.retry, reconnect=False) if len(self.pool.upstreams) > 1 else self.http.retry
        )
        self._health_task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        await asyncio.gather(*(self._check_upstream(u) for u in self.pool.upstreams))
        self._health_task = asyncio.create_task(self._probe_down_upstreams())

    async def shutdown(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task

    async def _check_upstream(self, upstream: Upstream) -> None:
        """The seed's troubleshooting, done for the user: reachable, key accepted, model served."""
        try:
            result = await self.http.get(
                upstream.models_url, self.upstream_headers, retry=NO_RETRY, timeout=self.config.startup_check_timeout_s
            )
        except UpstreamError as exc:
            raise StartupError(
                f"cannot reach the vLLM server at {redact_url(upstream.models_url)}: {exc.reason}. "
                f"Check that vLLM is running (curl {redact_url(upstream.root_url)}/health) and that base_url "
                "(policy_base_url in env.yaml) is its address."
            ) from None
        if result.status in (401, 403):
            raise StartupError(
                f"the vLLM server at {upstream.shown} refused the api_key (HTTP {result.status}). Check that "
                "api_key (policy_api_key in env.yaml) matches the --api-key vLLM was started with."
            )
        if not result.ok:
            raise StartupError(
                f"the vLLM server at {redact_url(upstream.models_url)} answered HTTP {result.status}: "
                f"{_error_message(result.body)}"
            )
        served = [str(m.get("id")) for m in (_json_or_empty(result.body).get("data") or []) if isinstance(m, dict)]
        if self.config.model not in served:
            raise StartupError(
                f"the vLLM server at {upstream.shown} does not serve model {self.config.model!r}; it serves: "
                f"{', '.join(served) or 'nothing'}. Set model (policy_model_name in env.yaml) to the name vLLM "
                "serves (its --served-model-name, or the --model path), and make sure the model finished loading."
            )

    async def _probe_down_upstreams(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_check_interval_s)
            for upstream in self.pool.down:
                with contextlib.suppress(UpstreamError):
                    result = await self.http.get(upstream.root_url + "/health", retry=NO_RETRY, timeout=5)
                    if result.ok:
                        self.pool.mark_up(upstream)

    # --- routes -------------------------------------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        body = await read_json_object(request)
        try:
            payload = responses_to_chat_request(body, self.config.model, self.options)
        except ConversionError as exc:
            raise HttpError(422, str(exc), param=exc.param) from None
        session = _session(request)
        chat, upstream = await self._complete(payload, session)
        if chat is None:
            answer = context_length_response(body, self.config.model)
        else:
            prompt_ids = await self._prompt_ids_if_missing(chat, payload, upstream)
            try:
                answer = chat_response_to_response(chat, body, self.options, prompt_ids)
            except TokenDataError as exc:
                raise HttpError(502, f"vLLM at {upstream.shown} returned unusable token data: {exc}") from None
        return self._reply(answer, session, upstream)

    async def chat_completions(self, request: Request) -> Response:
        body = await read_json_object(request)
        try:
            payload = chat_request_to_upstream(body, self.config.model, self.options)
        except ConversionError as exc:
            raise HttpError(422, str(exc), param=exc.param) from None
        session = _session(request)
        chat, upstream = await self._complete(payload, session)
        if chat is None:
            answer = context_length_chat_response(self.config.model)
        else:
            prompt_ids = await self._prompt_ids_if_missing(chat, payload, upstream)
            try:
                answer = chat_response_to_caller(chat, self.options, prompt_ids)
            except TokenDataError as exc:
                raise HttpError(502, f"vLLM at {upstream.shown} returned unusable token data: {exc}") from None
        return self._reply(answer, session, upstream)

    async def models(self, _request: Request) -> Response:
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "ngym"}
        return json_response({"object": "list", "data": [model]})

    # --- upstream -----------------------------------------------------------------------------------------

    def _apply_config(self, payload: dict[str, Any]) -> dict[str, Any]:
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
        return payload

    async def _complete(self, payload: dict[str, Any], session: Session) -> tuple[dict[str, Any] | None, Upstream]:
        """vLLM's chat completion for payload (None when the prompt does not fit the context), and the server
        that answered. A server that cannot be reached leaves rotation and the session moves on."""
        body = orjson.dumps(self._apply_config(payload))
        tried: set[int] = set()
        while True:
            upstream = self.pool.choose(session, frozenset(tried))
            headers = {**self.upstream_headers, SESSION_HEADER: session.session_id}
            upstream.in_flight += 1
            upstream.requests += 1
            try:
                result = await self.http.post_json(upstream.chat_url, body, headers, retry=self.upstream_retry)
            except UpstreamError as exc:
                if exc.server_unreachable:
                    self.pool.mark_down(upstream)
                    tried.add(upstream.index)
                    if len(tried) < len(self.pool.upstreams):
                        continue
                status = 504 if exc.kind == UpstreamError.TIMEOUT else 502
                raise HttpError(status, f"vLLM at {upstream.shown}: {exc.reason}") from None
            finally:
                upstream.in_flight -= 1
            if result.ok:
                return orjson.loads(result.body), upstream
            if result.status == 400 and _is_context_length_error(result.body):
                return None, upstream
            raise _upstream_http_error(upstream, result.status, result.body)

    async def _prompt_ids_if_missing(
        self, chat: dict[str, Any], payload: dict[str, Any], upstream: Upstream
    ) -> list[int] | None:
        """Inline prompt IDs are the rule; /tokenize is the fallback for servers that do not return them."""
        if not needs_prompt_token_ids(chat, self.options):
            return None
        request = {"model": self.config.model, "messages": payload["messages"], "add_generation_prompt": True}
        for key in ("tools", "chat_template_kwargs"):
            if key in payload:
                request[key] = payload[key]
        try:
            result = await self.http.post_json(upstream.root_url + "/tokenize", request, self.upstream_headers)
        except UpstreamError as exc:
            raise HttpError(502, f"vLLM /tokenize at {redact_url(upstream.root_url)}: {exc.reason}") from None
        if not result.ok:
            raise _upstream_http_error(upstream, result.status, result.body, "/tokenize")
        tokens = _json_or_empty(result.body).get("tokens")
        if not isinstance(tokens, list):
            raise HttpError(502, f"vLLM /tokenize at {redact_url(upstream.root_url)} answered without 'tokens'")
        return tokens

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


def _is_context_length_error(body: bytes) -> bool:
    lowered = body.lower()
    if b"cannot be greater than max_model_len" in lowered:
        return False  # max_tokens alone exceeds the model's length: the caller's mistake, not a long prompt
    return any(marker in lowered for marker in CONTEXT_LENGTH_MARKERS)


def _json_or_empty(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_message(body: bytes) -> str:
    parsed = _json_or_empty(body)
    error = parsed.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    return body[:300].decode(errors="replace")


def _upstream_http_error(upstream: Upstream, status: int, body: bytes, path: str = "") -> HttpError:
    where = f"vLLM at {upstream.shown}{path}"
    if status in (401, 403):
        return HttpError(502, f"{where} refused the api_key (HTTP {status}); check api_key (policy_api_key)")
    message = _error_message(body)
    if 400 <= status < 500 and status != 429:
        return HttpError(status, f"{where} rejected the request (HTTP {status}): {message}")
    return HttpError(502, f"{where} failed (HTTP {status}): {message}")
