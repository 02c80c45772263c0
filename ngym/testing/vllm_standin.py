"""A scripted stand-in for vLLM's OpenAI server, for failures real vLLM cannot be made to do on demand.

Wire shapes follow vLLM 0.32 exactly (checked against ``tests/data/vllm_recordings`` by
``tests/unit/test_standin_matches_recordings.py``). Routes: ``GET /health``, ``GET /v1/models``,
``POST /tokenize``, ``POST /v1/chat/completions``, ``GET /version``, the ``--enable-scale-out`` token routes
(render, generate, derender) of :mod:`ngym.testing.standin_tokens`, and ``/v1/completions``, ``/v1/responses`` and
``/detokenize`` of :mod:`ngym.testing.standin_completions`.

Behaviour, driven by a mutable :class:`StandinScript`:
- default: a fixed text reply; the common case is served from prebuilt byte templates (it is also the
  benchmark stand-in). Generated text goes through the same reasoning (deepseek_r1) and tool-call (hermes)
  parsing rules as vLLM, so ``max_tokens`` truncation behaves like the real thing;
- token information (``prompt_token_ids``, ``token_ids``, ``logprobs`` with ``token_id:N``) when asked, from a
  deterministic byte-level fake tokeniser (one token per UTF-8 byte, ChatML markers as single tokens);
- tool-call mode: a ``get_weather`` call while the conversation does not end with a tool message, then text;
- faults: queued per model call, i.e. chat or generate request (:class:`HttpError`, :class:`DropConnection`,
  :class:`Delay`), or ``down``
  for every request on every route; an api key check with vLLM's 401; a :class:`RequestLog`.

In-process: ``async with StandinServer(script) as server: server.base_url`` (or ``with`` for a background
thread). Standalone: ``python -m ngym.testing.vllm_standin --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ngym.testing.tiny_model import SERVED_MODEL_NAME

VLLM_VERSION = "0.32.0"
DEFAULT_MAX_MODEL_LEN = 32768  # the byte-level fake tokeniser makes prompts long; 1024 would trip often
DEFAULT_REPLY = "Hello! How can I help you?"
DEFAULT_TOOL_ANSWER = "It is sunny in SF."
DEFAULT_COMPLETION = " The answer is 4."
UNTRUSTED_TEMPLATE_MESSAGE = (
    "Chat template is passed with request, but --trust-request-chat-template is not set. Refused request with "
    "untrusted chat template."
)
CHAT_PATH = "/v1/chat/completions"
GUARDED_PREFIXES = ("/v1", "/v2", "/inference")  # vLLM's --api-key guards these only (not /health, /tokenize)
UNAUTHORIZED_BODY: dict[str, Any] = {"error": "Unauthorized"}
TRANSPORT_KEY = "ngym.transport"

# -- fake tokeniser ------------------------------------------------------------------------------------------
# Ids 0-255 are bytes; markers get single ids above them, like the tiny model's added tokens.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
SPECIAL_IDS = {text: 256 + i for i, text in enumerate(SPECIAL_TOKENS)}
SPECIAL_TEXT = {i: text for text, i in SPECIAL_IDS.items()}
EOS_ID = SPECIAL_IDS["<|im_end|>"]
THINK_START_ID = SPECIAL_IDS["<think>"]
THINK_END_ID = SPECIAL_IDS["</think>"]
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


def fake_tokenize(text: str) -> list[int]:
    ids: list[int] = []
    for piece in _SPECIAL_SPLIT.split(text):
        special = SPECIAL_IDS.get(piece)
        if special is not None:
            ids.append(special)
        elif piece:
            ids.extend(piece.encode())
    return ids


def fake_detokenize(ids: list[int]) -> str:
    out = bytearray()
    for i in ids:
        if i < 256:
            out.append(i)
        elif i != EOS_ID:  # vLLM skips special tokens; <|im_end|> is the only "special" one emitted
            out += SPECIAL_TEXT[i].encode()
    return out.decode(errors="replace")


def fake_token_bytes(token_id: int) -> bytes:
    if token_id >= 256:
        return SPECIAL_TEXT[token_id].encode()
    # A lone non-ASCII byte is an incomplete UTF-8 sequence: vLLM reports no bytes for those.
    return bytes([token_id]) if token_id < 128 else b""


def fake_logprob(token_id: int) -> float:
    return -0.125 * (1 + token_id % 8)


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # vLLM's "string" content format: text parts joined with newlines.
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def render_chat(
    messages: list[dict[str, Any]], tools: list[Any] | None = None, add_generation_prompt: bool = True
) -> str:
    """The tiny model's ChatML template, in Python (only self-consistency with /tokenize matters here)."""
    parts: list[str] = []
    body = messages
    system = ""
    if messages and messages[0].get("role") in ("system", "developer"):
        system, body = _text_of(messages[0].get("content")), messages[1:]
    if tools:
        listed = "".join("\n" + json.dumps(t) for t in tools)
        prefix = system + "\n\n" if system else ""
        parts.append(f"<|im_start|>system\n{prefix}# Tools\n<tools>{listed}\n</tools><|im_end|>\n")
    elif system:
        parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for message in body:
        role = message.get("role")
        if role == "assistant":
            reasoning = message.get("reasoning")
            text = f"<think>{reasoning}</think>" if isinstance(reasoning, str) and reasoning else ""
            content = _text_of(message.get("content"))
            text += content
            for n, call in enumerate(message.get("tool_calls") or []):
                fn = call.get("function", call)
                args = fn.get("arguments")
                args_text = args if isinstance(args, str) else json.dumps(args)
                # Like the template: a newline only after content or a previous call, so a call-only turn
                # renders exactly as the model generated it.
                text += "\n" if content or n else ""
                text += f'<tool_call>\n{{"name": {json.dumps(fn.get("name"))}, "arguments": {args_text}}}'
                text += "\n</tool_call>"
            parts.append(f"<|im_start|>assistant\n{text}<|im_end|>\n")
        elif role == "tool":
            parts.append(
                f"<|im_start|>tool\n<tool_response>\n{_text_of(message.get('content'))}\n</tool_response><|im_end|>\n"
            )
        else:
            shown = "system" if role == "developer" else role
            parts.append(f"<|im_start|>{shown}\n{_text_of(message.get('content'))}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


# -- faults --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpError:
    """Answer with this status and body (default: vLLM's error body for the status)."""

    status: int
    body: Any = None

    def response_body(self) -> Any:
        return self.body if self.body is not None else vllm_error_body(self.status)


@dataclass(frozen=True)
class DropConnection:
    """Close the connection without sending a single byte."""


@dataclass(frozen=True)
class Delay:
    """Wait, then answer normally."""

    seconds: float


class Hold:
    """Hold each request until `release()`, then answer normally. `wait_for_held(n)` returns once n requests are
    held at once, so a test acts on that state (e.g. kills a server while rollouts are on it), not after a time."""

    POLL_S = 0.005

    def __init__(self) -> None:
        self._released = threading.Event()
        self._changed = threading.Condition()
        self.held = 0

    async def wait(self) -> None:
        with self._changed:
            self.held += 1
            self._changed.notify_all()
        try:
            while not self._released.is_set():  # the stand-in's own loop must not block on a thread event
                await asyncio.sleep(self.POLL_S)
        finally:
            with self._changed:
                self.held -= 1
                self._changed.notify_all()

    def wait_for_held(self, count: int, timeout: float = 120.0) -> None:
        """Block until `count` requests are held at once (the timeout is a hang guard, not a measurement)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.held >= count, timeout):
                raise TimeoutError(f"{self.held} requests held after {timeout:g} s, waiting for {count}")

    def release(self) -> None:
        self._released.set()


Fault = HttpError | DropConnection | Delay | Hold

_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


def vllm_error_body(status: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase
    err_type = _ERROR_TYPES.get(status, phrase)
    return {"error": {"message": message or phrase, "type": err_type, "param": param, "code": status}}


def context_length_error_body(max_model_len: int = 1024) -> dict[str, Any]:
    # vLLM stops counting at max_model_len + 1 tokens, hence "at least".
    n = max_model_len + 1
    message = (
        f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains at least "
        f"{n} input tokens, which exceeds this limit even without any output tokens. Please reduce the length of "
        f"the input prompt. (parameter=input_tokens, value={n})"
    )
    return vllm_error_body(400, message, "input_tokens")


def context_length_error(max_model_len: int = 1024) -> HttpError:
    return HttpError(400, context_length_error_body(max_model_len))


def max_tokens_error_body(max_tokens: int, max_model_len: int) -> dict[str, Any]:
    message = (
        f"max_tokens={max_tokens} cannot be greater than max_model_len={max_model_len}. "
        f"Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})"
    )
    return vllm_error_body(400, message, "max_tokens")


def unknown_model_error_body(model: str, served: str) -> dict[str, Any]:
    return vllm_error_body(404, f"The model `{model}` does not exist. Valid aliases: {served}.", "model")


# -- request log ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    at: float

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


class RequestLog:
    """Every request the stand-in saw: counts per path, and the last ``maxlen`` requests in full."""

    def __init__(self, maxlen: int = 1000) -> None:
        self.counts: Counter[str] = Counter()
        self.entries: deque[LoggedRequest] = deque(maxlen=maxlen)

    def record(self, entry: LoggedRequest) -> None:
        self.counts[entry.path] += 1
        if self.entries.maxlen:
            self.entries.append(entry)

    def count(self, path: str | None = CHAT_PATH) -> int:
        return self.counts.total() if path is None else self.counts[path]

    def requests(self, path: str | None = CHAT_PATH) -> list[LoggedRequest]:
        return [e for e in self.entries if path is None or e.path == path]

    def last(self, path: str | None = CHAT_PATH) -> LoggedRequest:
        for entry in reversed(self.entries):
            if path is None or entry.path == path:
                return entry
        raise LookupError(f"no request to {path} was logged")

    def last_body(self, path: str | None = CHAT_PATH) -> Any:
        return self.last(path).json()

    def bodies(self, path: str | None = CHAT_PATH) -> list[Any]:
        return [e.json() for e in self.requests(path)]

    def header_values(self, name: str, path: str | None = CHAT_PATH) -> list[str | None]:
        return [e.headers.get(name.lower()) for e in self.requests(path)]

    def session_ids(self, path: str | None = CHAT_PATH) -> list[str | None]:
        return self.header_values("x-session-id", path)

    def clear(self) -> None:
        self.counts.clear()
        self.entries.clear()


# -- script --------------------------------------------------------------------------------------------------
@dataclass
class StandinScript:
    """What the stand-in does. Mutable: tests may change it while the server runs."""

    model: str = SERVED_MODEL_NAME
    max_model_len: int = DEFAULT_MAX_MODEL_LEN
    reply_text: str = DEFAULT_REPLY
    reasoning_text: str = ""
    reasoning_parser: bool = True  # like --reasoning-parser deepseek_r1: `reasoning` is "" rather than null
    tool_call_mode: bool = False
    tool_name: str = "get_weather"
    tool_arguments: dict[str, Any] = field(default_factory=lambda: {"city": "SF"})
    tool_answer_text: str = DEFAULT_TOOL_ANSWER
    api_key: str | None = None
    check_model: bool = True
    scale_out: bool = True  # like --enable-scale-out; False: the token routes answer vLLM's 403
    # What /v1/completions generates (a base model continuing a prompt), then its end-of-text token.
    completion_text: str = DEFAULT_COMPLETION
    trust_request_chat_template: bool = True  # like --trust-request-chat-template; False: vLLM's 400
    down: Fault | None = None  # applied to every request on every route while set
    # Consumed one per model call: chat, generate, completions, responses.
    faults: deque[Fault] = field(default_factory=deque)
    log: RequestLog = field(default_factory=RequestLog)

    def inject(self, *faults: Fault) -> None:
        """Queue faults for the next chat or generate requests, one each, in order."""
        self.faults.extend(faults)


# -- response building ---------------------------------------------------------------------------------------
def reply_text(script: StandinScript, *, calling: bool, after_tool: bool) -> str:
    """The text the scripted model generates: a tool call, the answer after a tool result, or the reply."""
    if calling:
        call = {"name": script.tool_name, "arguments": script.tool_arguments}
        body = f"<tool_call>\n{json.dumps(call)}\n</tool_call>"
    elif script.tool_call_mode and after_tool:
        body = script.tool_answer_text
    else:
        body = script.reply_text
    if script.reasoning_parser or script.reasoning_text:
        return f"<think>{script.reasoning_text}</think>{body}"
    return body


@dataclass(frozen=True)
class _Generation:
    message: dict[str, Any]
    finish_reason: str
    token_ids: list[int]
    reasoning_tokens: int


def _parse_generation(
    text: str, *, reasoning_parser: bool, tools_parsed: bool, ids: list[int], finished: bool, tool_ids: Iterator[str]
) -> _Generation:
    """Apply vLLM's deepseek_r1 reasoning split and hermes tool-call extraction to generated text."""
    reasoning: str | None = None
    content: str | None = text
    if reasoning_parser:
        _, start, rest = text.partition("<think>")
        after_start = rest if start else text
        if "</think>" in after_start:
            reasoning, _, tail = after_start.partition("</think>")
            content = tail or None
        else:
            reasoning, content = after_start, None
    tool_calls: list[dict[str, Any]] = []
    if tools_parsed and content and "<tool_call>" in content:
        for raw in re.findall(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", content, re.DOTALL):
            try:
                call = json.loads(raw[0] or raw[1])
                function = {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}
            except (ValueError, KeyError, TypeError):
                tool_calls = []  # like vLLM: a malformed call leaves the whole text as content
                break
            tool_calls.append({"id": next(tool_ids), "type": "function", "function": function})
        if tool_calls:
            content = content[: content.find("<tool_call>")] or None
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    message["reasoning"] = reasoning
    finish = ("tool_calls" if tool_calls else "stop") if finished else "length"
    return _Generation(message, finish, ids, _count_reasoning_tokens(ids) if reasoning_parser else 0)


def _count_reasoning_tokens(ids: list[int]) -> int:
    count = depth = 0
    for i in ids:
        if i == THINK_START_ID:
            depth += 1
        elif i == THINK_END_ID:
            depth = max(0, depth - 1)
        elif depth:
            count += 1
    return count


def _logprobs(ids: list[int], as_ids: bool, top: int) -> dict[str, Any]:
    entries = []
    for i in ids:
        token = f"token_id:{i}" if as_ids else fake_token_bytes(i).decode(errors="replace") or "\ufffd"
        entry: dict[str, Any] = {"token": token, "logprob": fake_logprob(i), "bytes": list(fake_token_bytes(i))}
        # The fake model has no alternatives to offer: its top-k list holds just the sampled token.
        entry["top_logprobs"] = [dict(entry)] if top > 0 else []
        entries.append(entry)
    return {"content": entries}


def _chat_body(
    *,
    rid: str,
    created: int,
    model: str,
    fingerprint: str,
    gen: _Generation,
    logprobs: dict[str, Any] | None,
    return_ids: bool,
    prompt_ids: list[int] | None,
    prompt_tokens: Any,
    total_tokens: Any,
    reasoning_parser: bool,
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": gen.message,
                "logprobs": logprobs,
                "finish_reason": gen.finish_reason,
                "stop_reason": None,
                "token_ids": gen.token_ids if return_ids else None,
                "routed_experts": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": fingerprint,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": total_tokens,
            "completion_tokens": len(gen.token_ids),
            "prompt_tokens_details": None,
            "completion_tokens_details": {"reasoning_tokens": gen.reasoning_tokens} if reasoning_parser else None,
        },
        "prompt_logprobs": None,
        "prompt_token_ids": prompt_ids if return_ids else None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


class _ByteTemplate:
    """A JSON body as literal byte chunks with slots, so the hot path is one ``bytes.join``."""

    def __init__(self, body: dict[str, Any], slots: tuple[str, ...]) -> None:
        raw = orjson.dumps(body)
        self.chunks: list[bytes] = []
        for slot in slots:
            marker = orjson.dumps(f"@@{slot}@@")
            head, found, raw = raw.partition(marker)
            if not found:
                raise ValueError(f"slot {slot} missing from template")
            self.chunks.append(head)
        self.tail = raw

    def fill(self, *values: bytes) -> bytes:
        return b"".join(itertools.chain.from_iterable(zip(self.chunks, values, strict=True))) + self.tail


class _DroppedResponse(Response):
    """Closes the connection instead of answering (needs the transport our uvicorn protocol exposes)."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get("extensions", {}).get(TRANSPORT_KEY, {}).get("transport")
        if transport is None:
            raise RuntimeError("DropConnection needs StandinServer's uvicorn protocol")
        transport.close()
        await asyncio.sleep(0)  # let uvicorn see connection_lost, so it does not try to send a 500


class _ExposeTransportProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, putting the connection's transport in each request's scope."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # ASGI extensions map a name to a dict.
        self.scope["extensions"] = {TRANSPORT_KEY: {"transport": self.transport}}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class StandinApp:
    """The Starlette app for one script."""

    def __init__(self, script: StandinScript) -> None:
        self.script = script
        self.fingerprint = f"vllm-{VLLM_VERSION}-{os.urandom(4).hex()}"
        self._ids = itertools.count(int.from_bytes(os.urandom(4)) << 16)
        self._template_key: tuple[Any, ...] | None = None
        self._template: _ByteTemplate | None = None
        self._template_completion_tokens = 0
        # Imported here: standin_tokens and the chat checks build on this module.
        from ngym.testing.standin_chat_checks import checked_chat_request
        from ngym.testing.standin_completions import CompletionsRoutes
        from ngym.testing.standin_tokens import TokenRoutes

        self._checked_chat_request = checked_chat_request

        self.app = Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/version", self.version, methods=["GET"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/tokenize", self.tokenize, methods=["POST"]),
                Route(CHAT_PATH, self.chat, methods=["POST"]),
                *TokenRoutes(self).routes(),
                *CompletionsRoutes(self).routes(),
            ]
        )

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):016x}"

    def _tool_ids(self) -> Iterator[str]:
        while True:
            yield self._next_id("chatcmpl-tool-")

    async def _admit(self, request: Request, body: bytes = b"", fault: Fault | None = None) -> Response | None:
        """Log the request; return the response that ends it early (fault, auth), if any."""
        script = self.script
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
        script.log.record(LoggedRequest(request.method, request.url.path, headers, body, time.time()))
        for active in (script.down, fault):
            if isinstance(active, Delay):
                await asyncio.sleep(active.seconds)
            elif isinstance(active, Hold):
                await active.wait()
            elif isinstance(active, HttpError):
                return _json(active.response_body(), active.status)
            elif isinstance(active, DropConnection):
                return _DroppedResponse()
        if script.api_key and request.url.path.startswith(GUARDED_PREFIXES) and not self._authorized(headers):
            return _json(UNAUTHORIZED_BODY, 401)
        return None

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token == self.script.api_key

    async def health(self, request: Request) -> Response:
        return await self._admit(request) or Response(b"", 200)

    async def version(self, request: Request) -> Response:
        return await self._admit(request) or _json({"version": VLLM_VERSION})

    async def models(self, request: Request) -> Response:
        early = await self._admit(request)
        if early is not None:
            return early
        created = int(time.time())
        model = self.script.model
        permission = {
            "id": self._next_id("modelperm-"),
            "object": "model_permission",
            "created": created,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        card = {
            "id": model,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": model,
            "parent": None,
            "max_model_len": self.script.max_model_len,
            "permission": [permission],
        }
        return _json({"object": "list", "data": [card]})

    async def tokenize(self, request: Request) -> Response:
        raw = await request.body()
        early = await self._admit(request, raw)
        if early is not None:
            return early
        req = orjson.loads(raw)
        if req.get("chat_template") is not None and not self.script.trust_request_chat_template:
            return _json(vllm_error_body(400, UNTRUSTED_TEMPLATE_MESSAGE), 400)
        if "messages" in req:
            text = render_chat(req["messages"], req.get("tools"), req.get("add_generation_prompt", True))
        else:
            text = str(req.get("prompt", ""))
        ids = fake_tokenize(text)
        strs = [fake_token_bytes(i).decode(errors="replace") for i in ids] if req.get("return_token_strs") else None
        return _json({"count": len(ids), "max_model_len": self.script.max_model_len, "tokens": ids, "token_strs": strs})

    async def chat(self, request: Request) -> Response:
        script = self.script
        raw = await request.body()
        fault = script.faults.popleft() if script.faults else None
        early = await self._admit(request, raw, fault)
        if early is not None:
            return early
        req, refused = self._checked_chat_request(raw)
        if req is None:
            assert refused is not None
            return refused
        if req.get("stream"):
            return _json(vllm_error_body(501, "the vLLM stand-in does not stream"), 501)
        model = req.get("model")
        if script.check_model and model != script.model:
            return _json(unknown_model_error_body(str(model), script.model), 404)
        max_tokens = req.get("max_tokens") or req.get("max_completion_tokens")
        if max_tokens is not None and max_tokens > script.max_model_len:
            return _json(max_tokens_error_body(max_tokens, script.max_model_len), 400)

        messages = req.get("messages") or []
        tools = req.get("tools")
        prompt_ids = fake_tokenize(render_chat(messages, tools))
        if len(prompt_ids) > script.max_model_len:
            return _json(context_length_error_body(script.max_model_len), 400)
        budget = script.max_model_len - len(prompt_ids)
        limit = budget if max_tokens is None else min(max_tokens, budget)
        tools_parsed = bool(tools) and req.get("tool_choice") != "none"
        calling = tools_parsed and script.tool_call_mode and not (messages and messages[-1].get("role") == "tool")
        want_ids = req.get("return_token_ids") is True
        want_logprobs = req.get("logprobs") is True

        if not (calling or want_ids or want_logprobs):
            fast = self._fast_reply(messages, tools_parsed, limit, len(prompt_ids))
            if fast is not None:
                return Response(fast, media_type="application/json")

        gen = self._generate(self._reply_text(messages, calling), limit, tools_parsed)
        logprobs = None
        if want_logprobs:
            as_ids = req.get("return_tokens_as_token_ids") is True
            logprobs = _logprobs(gen.token_ids, as_ids, req.get("top_logprobs") or 0)
        body = _chat_body(
            rid=self._next_id("chatcmpl-"),
            created=int(time.time()),
            model=script.model,
            fingerprint=self.fingerprint,
            gen=gen,
            logprobs=logprobs,
            return_ids=want_ids,
            prompt_ids=prompt_ids,
            prompt_tokens=len(prompt_ids),
            total_tokens=len(prompt_ids) + len(gen.token_ids),
            reasoning_parser=script.reasoning_parser,
        )
        return _json(body)

    def _reply_text(self, messages: list[dict[str, Any]], calling: bool) -> str:
        return reply_text(
            self.script, calling=calling, after_tool=bool(messages and messages[-1].get("role") == "tool")
        )

    def _generate(self, text: str, limit: int, tools_parsed: bool) -> _Generation:
        ids = [*fake_tokenize(text), EOS_ID]
        finished = len(ids) <= limit
        ids = ids[:limit]
        return _parse_generation(
            fake_detokenize(ids),
            reasoning_parser=self.script.reasoning_parser,
            tools_parsed=tools_parsed,
            ids=ids,
            finished=finished,
            tool_ids=self._tool_ids(),
        )

    def _fast_reply(
        self, messages: list[dict[str, Any]], tools_parsed: bool, limit: int, prompt_tokens: int
    ) -> bytes | None:
        script = self.script
        key = (
            script.model,
            script.reply_text,
            script.reasoning_text,
            script.reasoning_parser,
            script.tool_call_mode,
            script.tool_answer_text,
            tools_parsed,
            bool(messages and messages[-1].get("role") == "tool"),
        )
        if key != self._template_key:
            self._template_key, self._template = key, None
            gen = self._generate(self._reply_text(messages, False), 1 << 30, tools_parsed)
            if "tool_calls" in gen.message:
                return None  # tool-call ids vary per call: take the general path
            body = _chat_body(
                rid="@@ID@@",
                created=0,
                model=script.model,
                fingerprint=self.fingerprint,
                gen=gen,
                logprobs=None,
                return_ids=False,
                prompt_ids=None,
                prompt_tokens="@@PT@@",
                total_tokens="@@TT@@",
                reasoning_parser=script.reasoning_parser,
            )
            body["created"] = "@@CREATED@@"
            self._template = _ByteTemplate(body, ("ID", "CREATED", "PT", "TT"))
            self._template_completion_tokens = len(gen.token_ids)
        if self._template is None or self._template_completion_tokens > limit:
            return None  # truncated by max_tokens / context: take the general path
        return self._template.fill(
            orjson.dumps(self._next_id("chatcmpl-")),
            str(int(time.time())).encode(),
            str(prompt_tokens).encode(),
            str(prompt_tokens + self._template_completion_tokens).encode(),
        )


def build_app(script: StandinScript) -> Starlette:
    return StandinApp(script).app


# -- servers -------------------------------------------------------------------------------------------------
class _QuietServer(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to the host process (pytest, a demo script)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    # Binding ourselves (port 0 = any free port) means the port is known before serving, with no race.
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP, and
    # without it every reply waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _uvicorn_config(app: Starlette, **overrides: Any) -> uvicorn.Config:
    settings: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "lifespan": "off",
        "ws": "none",
        "http": _ExposeTransportProtocol,
        "timeout_graceful_shutdown": 1,  # a Delay fault must not hold up shutdown
        "backlog": 2048,
    }
    return uvicorn.Config(app, **{**settings, **overrides})


class StandinServer:
    """The stand-in on a free port. ``async with`` runs it on the current loop; ``with`` in a thread."""

    def __init__(self, script: StandinScript | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = StandinApp(script if script is not None else StandinScript())
        self.host = host
        self.port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def script(self) -> StandinScript:
        return self._app.script

    @script.setter
    def script(self, script: StandinScript) -> None:
        """Swap the script of a running server (e.g. a fresh one per test on a shared server)."""
        self._app.script = script

    @property
    def log(self) -> RequestLog:
        return self.script.log

    def _prepare(self) -> tuple[_QuietServer, socket.socket]:
        if self._server is not None:
            raise RuntimeError("this StandinServer is already running")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = _QuietServer(_uvicorn_config(self._app.app))
        return self._server, sock

    async def start(self) -> StandinServer:
        server, sock = self._prepare()
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._task.result()  # raises what went wrong
                raise RuntimeError("stand-in server exited during start-up")
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None and task is not None:
            server.should_exit = True
            await task

    def start_in_thread(self, timeout: float = 10.0) -> StandinServer:
        server, sock = self._prepare()
        # Server.run picks uvicorn's event loop (uvloop when installed).
        self._thread = threading.Thread(target=lambda: server.run(sockets=[sock]), name="vllm-standin", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("stand-in server thread did not start")
            time.sleep(0.01)
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)

    async def __aenter__(self) -> StandinServer:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __enter__(self) -> StandinServer:
        return self.start_in_thread()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_thread()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scripted vLLM stand-in (OpenAI chat completions).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default=SERVED_MODEL_NAME)
    parser.add_argument("--reply", default=DEFAULT_REPLY)
    parser.add_argument("--reasoning-text", default="")
    parser.add_argument("--no-reasoning-parser", action="store_true")
    parser.add_argument("--tool-call-mode", action="store_true")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--no-scale-out", action="store_true", help="answer the token routes with vLLM's 403")
    parser.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before every answer")
    parser.add_argument("--log-entries", type=int, default=0, help="requests kept in full in the request log")
    args = parser.parse_args(argv)
    script = StandinScript(
        model=args.model,
        max_model_len=args.max_model_len,
        reply_text=args.reply,
        reasoning_text=args.reasoning_text,
        reasoning_parser=not args.no_reasoning_parser,
        tool_call_mode=args.tool_call_mode,
        api_key=args.api_key,
        scale_out=not args.no_scale_out,
        down=Delay(args.delay) if args.delay > 0 else None,
        log=RequestLog(maxlen=args.log_entries),
    )
    sock = _bind(args.host, args.port)
    print(f"vLLM stand-in serving {args.model} at http://{args.host}:{sock.getsockname()[1]}/v1", flush=True)
    uvicorn.Server(_uvicorn_config(build_app(script), loop="uvloop")).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
