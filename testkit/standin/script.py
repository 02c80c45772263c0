"""What a test scripts the stand-in with: the reply (`StandinScript`), the faults queued per model call
(`HttpFault`, `DropConnection`, `Delay`, `Hold`) or set for every request (`down`), and the log of every request
it saw (`RequestLog`). `RouteHost` is what the route modules need of the app."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response

from testkit.standin.wire import (
    CHAT_PATH,
    DEFAULT_COMPLETION,
    DEFAULT_MAX_MODEL_LEN,
    DEFAULT_REPLY,
    DEFAULT_TOOL_ANSWER,
    _Generation,
    context_length_error_body,
    vllm_error_body,
)
from testkit.tiny_model import SERVED_MODEL_NAME


# -- faults --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpFault:
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


Fault = HttpFault | DropConnection | Delay | Hold


def context_length_error(max_model_len: int = 1024) -> HttpFault:
    return HttpFault(400, context_length_error_body(max_model_len))


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


class RouteHost(Protocol):
    """What the route modules (tokens.py, completions.py) use of the app that mounts them (app.StandinApp)."""

    script: StandinScript
    fingerprint: str

    async def _admit(self, request: Request, body: bytes = b"", fault: Fault | None = None) -> Response | None: ...

    def _next_id(self, prefix: str) -> str: ...

    def _reply_text(self, messages: list[dict[str, Any]], calling: bool) -> str: ...

    def _generate(self, text: str, limit: int, tools_parsed: bool) -> _Generation: ...
