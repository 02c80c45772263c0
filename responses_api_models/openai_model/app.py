"""openai_model: the Responses and Chat Completions APIs passed to any OpenAI-compatible API (OpenAI, NVIDIA's
API, another vLLM), as NeMo Gym's `openai_model` does; NeMo Gym environments' judges are configured with it.

Per request: the configured `extra_body` under the caller's fields, the configured model name, and (optionally)
the caller's reasoning items dropped; the answer comes back as the API gave it. Retries (`max_http_attempts`),
the concurrency cap and the headers are set once at start-up. An error names the API's URL and what to change,
never the key.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ngym.config.secrets import redact_url
from ngym.http.app import HttpError, error_message, error_object, json_response, read_json_object
from ngym.http.client import NO_RETRY, HttpClient, HttpResult, RetryPolicy, Timeouts, UpstreamError
from ngym.servers.base import ServerContext, StartupError
from ngym.servers.model import ModelServer
from responses_api_models.openai_model.config import OpenAIModelConfig

__all__ = ["OpenAIModel", "OpenAIModelConfig"]

RESPONSES = "/responses"
CHAT_COMPLETIONS = "/chat/completions"
MODELS = "/models"


class OpenAIModel(ModelServer[OpenAIModelConfig]):
    config_model = OpenAIModelConfig

    @classmethod
    def http_client(cls, config: OpenAIModelConfig) -> HttpClient:
        return HttpClient(
            timeouts=Timeouts(total=config.request_timeout_s, connect=config.connect_timeout_s),
            retry=RetryPolicy(max_attempts=config.max_http_attempts),
        )

    def __init__(self, config: OpenAIModelConfig, context: ServerContext) -> None:
        super().__init__(config, context)
        self.base_url = config.openai_base_url
        self.shown_base = redact_url(self.base_url)
        self.headers = dict(config.openai_default_headers)
        key = config.openai_api_key.get_secret_value() if config.openai_api_key is not None else ""
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        limit = config.max_concurrent_requests
        self.slots: asyncio.Semaphore | contextlib.nullcontext[None] = (
            asyncio.Semaphore(limit) if limit is not None else contextlib.nullcontext()
        )

    async def startup(self) -> None:
        if not self.config.startup_check:
            return
        url = self.base_url + MODELS
        try:
            result = await self.http.get(url, self.headers, retry=NO_RETRY, timeout=self.config.startup_check_timeout_s)
        except UpstreamError as exc:
            raise StartupError(
                f"the OpenAI-compatible API at {self.shown_base} does not answer ({exc.reason}); check "
                "openai_base_url (e.g. +judge_base_url=... or +policy_base_url=...), or set startup_check: false"
            ) from None
        if result.status in (401, 403):
            raise StartupError(
                f"the OpenAI-compatible API at {self.shown_base} refused the key (HTTP {result.status} on GET "
                f"{MODELS}); check openai_api_key (e.g. +judge_api_key=... or +policy_api_key=...)"
            )
        if result.ok:
            served = _model_ids(result.body)
            if served and self.config.openai_model not in served:
                self.warn(
                    f"the OpenAI-compatible API at {self.shown_base} does not list the model "
                    f"{self.config.openai_model!r} (it lists {', '.join(sorted(served)[:10])}); requests may fail"
                )

    # --- routes -------------------------------------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        body = self._outbound(await read_json_object(request))
        if self.config.drop_input_reasoning_items and isinstance(body.get("input"), list):
            body["input"] = [item for item in body["input"] if not _is_reasoning_item(item)]
        return await self._forward(RESPONSES, body)

    async def chat_completions(self, request: Request) -> Response:
        return await self._forward(CHAT_COMPLETIONS, self._outbound(await read_json_object(request)))

    async def models(self, _request: Request) -> Response:
        model = {"id": self.config.openai_model, "object": "model", "created": 0, "owned_by": "ngym"}
        return json_response({"object": "list", "data": [model]})

    # --- helpers ------------------------------------------------------------------------------------------

    def _outbound(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("stream"):
            raise HttpError(422, "streaming is not supported; send stream: false", param="stream")
        return {**self.config.extra_body, **body, "model": self.config.openai_model}

    async def _forward(self, path: str, body: dict[str, Any]) -> Response:
        url = self.base_url + path
        async with self.slots:
            try:
                result = await self.http.post_json(url, orjson.dumps(body), self.headers)
            except UpstreamError as exc:
                status = 504 if exc.kind == UpstreamError.TIMEOUT else 502
                raise HttpError(status, f"the OpenAI-compatible API at {redact_url(url)}: {exc.reason}") from None
        if not result.ok:
            raise _answer_error(result, redact_url(url))
        if not result.body.lstrip().startswith(b"{"):
            raise HttpError(502, f"the OpenAI-compatible API at {redact_url(url)} answered with no JSON object")
        return Response(result.body, media_type="application/json")


def _answer_error(result: HttpResult, shown_url: str) -> HttpError:
    """The API's error answer for the caller: its own 4xx (the caller's request), a refused key or a failure."""
    status, where = result.status, f"the OpenAI-compatible API at {shown_url}"
    if status in (401, 403):
        return HttpError(502, f"{where} refused the key (HTTP {status}); check openai_api_key")
    message = error_message(result.body)
    if 400 <= status < 500 and status not in (404, 408, 429):
        param = error_object(result.body).get("param")
        field = param if isinstance(param, str) and param else None
        return HttpError(status, f"{where} rejected the request (HTTP {status}): {message}", param=field)
    if status == 404:
        return HttpError(502, f"{where} has no such route (HTTP 404): {message}; check openai_base_url")
    return HttpError(502, f"{where} failed (HTTP {status}): {message}")


def _is_reasoning_item(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "reasoning"


def _model_ids(body: bytes) -> set[str]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return set()
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        return set()
    return {entry["id"] for entry in data if isinstance(entry, dict) and isinstance(entry.get("id"), str)}
