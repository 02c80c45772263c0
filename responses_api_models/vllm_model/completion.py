"""What every way of finishing a turn shares: the finished turn (`Completion`), the protocol a path implements
(`CompletionPath`), and the two calls each makes on vLLM (`post_json` to the session's server, `answer_json` to
read its answer, a context overflow as None)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson

from ngym.http.app import HttpError
from ngym.protocol.shapes import JSON
from ngym.upstream.client import NoAnswer, UpstreamAnswer, UpstreamClient
from ngym.upstream.pool import Session, Upstream
from responses_api_models.vllm_model.upstream_errors import (
    is_context_length_error,
    json_or_empty,
    no_answer_error,
    upstream_http_error,
)


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
