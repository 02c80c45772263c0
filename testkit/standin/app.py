"""The stand-in's Starlette app for one script: /health, /version, /v1/models, /tokenize and /v1/chat/completions
here, the token routes (tokens.py) and the completions and Responses routes (completions.py) mounted from theirs.
Requests are admitted (logged, faulted, key-checked) in one place."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from testkit.standin.chat_checks import checked_chat_request
from testkit.standin.completions import CompletionsRoutes
from testkit.standin.script import (
    Delay,
    DropConnection,
    Fault,
    Hold,
    HttpFault,
    LoggedRequest,
    StandinScript,
    reply_text,
)
from testkit.standin.tokens import TokenRoutes
from testkit.standin.wire import (
    CHAT_PATH,
    EOS_ID,
    GUARDED_PREFIXES,
    TRANSPORT_KEY,
    UNAUTHORIZED_BODY,
    UNTRUSTED_TEMPLATE_MESSAGE,
    VLLM_VERSION,
    _ByteTemplate,
    _chat_body,
    _Generation,
    _json,
    _logprobs,
    _parse_generation,
    context_length_error_body,
    fake_detokenize,
    fake_token_bytes,
    fake_tokenize,
    max_tokens_error_body,
    render_chat,
    unknown_model_error_body,
    vllm_error_body,
)


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


class StandinApp:
    """The Starlette app for one script."""

    def __init__(self, script: StandinScript) -> None:
        self.script = script
        self.fingerprint = f"vllm-{VLLM_VERSION}-{os.urandom(4).hex()}"
        self._ids = itertools.count(int.from_bytes(os.urandom(4)) << 16)
        self._template_key: tuple[Any, ...] | None = None
        self._template: _ByteTemplate | None = None
        self._template_completion_tokens = 0
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
            elif isinstance(active, HttpFault):
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
