"""What a vLLM server's error answers mean for the caller: a context overflow, the caller's mistake, or a failure."""

from __future__ import annotations

from typing import Any

import orjson

from ngym.http.app import HttpError, error_message, error_object
from ngym.protocol.token_endpoints import DERENDER_PATH, GENERATE_PATH, RENDER_PATH
from ngym.upstream.client import NoAnswer
from ngym.upstream.pool import Upstream

# vLLM's answers for a prompt that does not fit the context (current, and older releases). Not "max_model_len":
# `max_tokens=N cannot be greater than max_model_len` is the caller's mistake and must stay an error.
CONTEXT_LENGTH_MARKERS = (b"maximum context length", b"is too long to fit into the model")
TOKEN_PATHS = (RENDER_PATH, GENERATE_PATH, DERENDER_PATH)
# Requests the model server builds itself (from vLLM's own render and generate answers): a 4xx is not the caller's.
BUILT_HERE = (GENERATE_PATH, DERENDER_PATH)
# How vLLM answers a token endpoint it does not serve: without --enable-scale-out (403), or too old (404...).
NOT_SERVED = (403, 404, 405, 501)


def is_context_length_error(status: int, body: bytes) -> bool:
    if status != 400:
        return False
    lowered = body.lower()
    if b"cannot be greater than max_model_len" in lowered:
        return False  # max_tokens alone exceeds the model's length: the caller's mistake, not a long prompt
    return any(marker in lowered for marker in CONTEXT_LENGTH_MARKERS)


def json_or_empty(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def upstream_http_error(upstream: Upstream, status: int, body: bytes, path: str = "/v1/chat/completions") -> HttpError:
    where = f"vLLM at {upstream.shown_url(path)}"
    if path in TOKEN_PATHS and status in NOT_SERVED:
        return HttpError(
            502,
            f"{where} does not serve {path} (HTTP {status}): this vLLM was not started with --enable-scale-out (or "
            "is too old for the token-exact path); start vLLM with --enable-scale-out, or set token_exact: never",
        )
    if status in (401, 403):
        return HttpError(502, f"{where} refused the api_key (HTTP {status}); check api_key (policy_api_key)")
    message = error_message(body)
    if path in BUILT_HERE and 400 <= status < 500 and status != 429:
        return HttpError(502, f"{where} refused the request the model server built (HTTP {status}): {message}")
    if 400 <= status < 500 and status != 429:
        field = upstream_field(body)
        at = f" at {field}" if field else ""
        return HttpError(status, f"{where} rejected the request{at} (HTTP {status}): {message}", param=field)
    return HttpError(502, f"{where} failed (HTTP {status}): {message}")


def upstream_field(body: bytes) -> str | None:
    """The field vLLM named (`body.messages.0.role`) as a path of the Chat Completions request the model server
    sent (`messages[0].role`); on the chat route that is the caller's own field."""
    param = error_object(body).get("param")
    if not isinstance(param, str) or not param:
        return None
    path = ""
    for part in param.removeprefix("body.").removeprefix("body").split("."):
        if part.isdigit():
            path += f"[{part}]"
        elif part:
            path += f".{part}" if path else part
    return path or None


def no_answer_error(exc: NoAnswer) -> HttpError:
    status = 504 if exc.error.kind == exc.error.TIMEOUT else 502
    return HttpError(status, str(exc))
