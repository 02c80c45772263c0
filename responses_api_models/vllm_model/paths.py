"""How a turn is completed on vLLM: the chat path (one chat completion) or the token-exact path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ngym.http.app import HttpError
from ngym.upstream.client import NoAnswer, UpstreamAnswer, UpstreamClient
from ngym.upstream.pool import Session, Upstream
from responses_api_models.vllm_model.upstream_errors import (
    is_context_length_error,
    json_or_empty,
    no_answer_error,
    upstream_http_error,
)

JSON = dict[str, Any]
CHAT_PATH = "/v1/chat/completions"
TOKENIZE_PATH = "/tokenize"


@dataclass(frozen=True, slots=True)
class Completion:
    """vLLM's chat completion for a turn (None: the prompt does not fit the context) and the server that
    answered; `prompt_token_ids` when they had to be fetched separately."""

    chat: JSON | None
    upstream: Upstream
    prompt_token_ids: list[int] | None = None
    path: str = "chat"  # how the turn was completed (chat, exact, completions): a label of the turn metrics


class CompletionPath(Protocol):
    async def complete(self, payload: JSON, session: Session) -> Completion: ...


async def post_json(client: UpstreamClient, session: Session, path: str, body: JSON | bytes) -> UpstreamAnswer:
    """POST to the session's server; no answer from any server is a 502/504 naming the server."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    try:
        return await client.post(session, path, data)
    except NoAnswer as exc:
        raise no_answer_error(exc) from None


def answer_json(answer: UpstreamAnswer, path: str) -> JSON | None:
    """The JSON object of a successful answer; None for a context overflow; an HttpError for anything else."""
    result = answer.result
    if result.ok:
        value = json_or_empty(result.body)
        if not value:
            raise HttpError(502, f"vLLM at {answer.upstream.shown_url(path)} answered with no JSON object")
        return value
    if is_context_length_error(result.status, result.body):
        return None
    raise upstream_http_error(answer.upstream, result.status, result.body, path)


class ChatPath:
    """One chat completion per turn. Prompt IDs (in training mode) are vLLM's rendering of the history as text;
    `/tokenize` is the fallback for servers that do not return them inline."""

    def __init__(self, client: UpstreamClient, model: str, needs_prompt_ids: bool) -> None:
        self.client = client
        self.model = model
        self.needs_prompt_ids = needs_prompt_ids

    async def complete(self, payload: JSON, session: Session) -> Completion:
        answer = await post_json(self.client, session, CHAT_PATH, payload)
        chat = answer_json(answer, CHAT_PATH)
        prompt_ids = None
        if chat is not None and self.needs_prompt_ids and chat.get("prompt_token_ids") is None:
            prompt_ids = await self._tokenize(payload, session)
        return Completion(chat, answer.upstream, prompt_ids)

    async def _tokenize(self, payload: JSON, session: Session) -> list[int]:
        return await tokenize(self.client, session, chat_tokenize_request(self.model, payload))


def chat_tokenize_request(model: str, payload: JSON, chat_template: str | None = None) -> JSON:
    """The /tokenize body that renders a chat request's prompt as its chat completion would."""
    request: JSON = {"model": model, "messages": payload["messages"], "add_generation_prompt": True}
    for key in ("tools", "chat_template_kwargs", "chat_template", "mm_processor_kwargs"):
        if payload.get(key) is not None:
            request[key] = payload[key]
    if chat_template is not None:
        request["chat_template"] = chat_template
    return request


async def tokenize(client: UpstreamClient, session: Session, request: JSON) -> list[int]:
    """vLLM's /tokenize on the session's server: the token IDs."""
    answer = await post_json(client, session, TOKENIZE_PATH, request)
    if not answer.result.ok:
        raise upstream_http_error(answer.upstream, answer.result.status, answer.result.body, TOKENIZE_PATH)
    tokens = json_or_empty(answer.result.body).get("tokens")
    if not isinstance(tokens, list):
        raise HttpError(502, f"vLLM at {answer.upstream.shown_url(TOKENIZE_PATH)} answered without 'tokens'")
    return tokens
