"""The chat path: a turn is one chat completion on vLLM. Prompt IDs (in training mode) are vLLM's rendering of
the history as text; `/tokenize` is the fallback for servers that do not return them inline."""

from __future__ import annotations

from ngym.http.app import HttpError
from ngym.protocol.shapes import JSON
from ngym.upstream.client import UpstreamClient
from ngym.upstream.pool import Session
from responses_api_models.vllm_model.completion import Completion, answer_json, post_json
from responses_api_models.vllm_model.upstream_errors import json_or_empty, upstream_http_error

CHAT_PATH = "/v1/chat/completions"
TOKENIZE_PATH = "/tokenize"


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
