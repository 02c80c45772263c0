"""Every error a server answers is in the OpenAI error shape, with no secret in it, and none is a traceback.

`ErrorGuard` is the outermost layer of every server's app: an exception that no handler turned into an answer
(a bug, or a crash in an environment's tool or verifier) is answered 500 naming the route, and logged as one
line saying where it was raised; the connection is never dropped and the server keeps serving. It is also where
a request whose `Host` or `Origin` does not name the server is refused (403, nothing else; ngym.http.hosts).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ngym.http.app import HttpError, error_response
from ngym.http.hosts import ALLOWED_HOSTS_KEY, HostCheck, allowed_hosts

Redact = Callable[[str], str]


# How a server's own domain errors become HTTP answers (e.g. a model server's ConversionError: the caller's 422).
ErrorAnswers = Mapping[type[Exception], Callable[[Exception], HttpError]]


def exception_handlers(redact: Redact, answers: ErrorAnswers | None = None) -> Mapping[Any, Callable[..., Any]]:
    """Starlette handlers: ngym's HttpError, the server's `answers` for its domain errors and Starlette's own
    (unknown route, wrong method), all redacted."""

    async def http_error(_request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HttpError):
            exc = next(answer(exc) for kind, answer in (answers or {}).items() if isinstance(exc, kind))
        return error_response(
            exc.status, redact(exc.message), param=exc.param, error_type=exc.error_type, code=exc.code
        )

    async def starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"no route {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, redact(message), headers=dict(exc.headers or {}))

    return {HttpError: http_error, **dict.fromkeys(answers or {}, http_error), HTTPException: starlette_error}


async def refused_foreign_host(hosts: HostCheck, name: str, scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer a request whose `Host` or `Origin` does not name this server (a 403 in OpenAI's shape, a websocket
    closed) and say so; False for one that may go on."""
    if scope["type"] not in ("http", "websocket"):
        return False
    refusal = hosts.refusal(scope["headers"])
    if refusal is None:
        return False
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
    else:
        message = f"{name}: {refusal}; add the name to {ALLOWED_HOSTS_KEY} if it is one"
        await error_response(403, message, code="host_not_allowed")(scope, receive, send)
    return True


class ErrorGuard:
    """`hosts`: the names the server answers to (ngym.http.hosts.allowed_hosts; loopback names when not given)."""

    def __init__(
        self, app: ASGIApp, name: str, redact: Redact, log: TextIO | None = None, hosts: frozenset[str] | None = None
    ) -> None:
        self.app = app
        self.name = name
        self.redact = redact
        self.log = log
        self.hosts = HostCheck(allowed_hosts() if hosts is None else hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await refused_foreign_host(self.hosts, self.name, scope, receive, send):
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            return  # the caller left; nobody to answer
        except Exception as exc:
            route = f"{scope.get('method', '')} {scope.get('path', '')}"
            what = self.redact(f"{type(exc).__name__}: {exc}")[:500]
            print(f"{self.name}: error: {route}: {what} (raised at {raised_at(exc)})", file=self.log or sys.stderr)
            if not started:
                answer = error_response(500, f"{self.name} failed on {route}: {what}", error_type="server_error")
                await answer(scope, receive, send)


def raised_at(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno} in {frame.name}"
