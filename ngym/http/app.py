"""Helpers shared by every server's HTTP layer: JSON in and out, errors, and running an ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import orjson
import uvicorn
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

ModelT = TypeVar("ModelT", bound=BaseModel)


class HttpError(Exception):
    """An error answer in the OpenAI error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        error_type: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.error_type = error_type or ("invalid_request_error" if status < 500 else "server_error")
        self.code = code

    def to_response(self) -> Response:
        return error_response(self.status, self.message, param=self.param, error_type=self.error_type, code=self.code)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    error_type: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The OpenAI error shape; `code` is the status unless a more precise code (e.g. a failure class) is given."""
    kind = error_type or ("invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code if code is not None else status}}
    return json_response(body, status=status, headers=headers)


def error_object(body: bytes) -> dict[str, Any]:
    """The `error` object of an answer in the OpenAI error shape; {} when the body has none."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}


def error_message(body: bytes, raw_limit: int = 300) -> str:
    """What an error answer says: `error.message` (or a top-level `message`), else the start of the body."""
    message = error_object(body).get("message")
    if isinstance(message, str) and message:
        return message
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    return body[:raw_limit].decode(errors="replace")


# orjson reads documents nested up to 1024 levels but writes only up to 254: a body nested deeper than this
# would be accepted and then fail when passed on downstream.
MAX_NESTING = 200


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"request body is not valid JSON: {exc}") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING:  # C-speed counts: only such bodies are walked
        check_nesting(body)
    return body


def check_nesting(body: Any, limit: int = MAX_NESTING) -> None:
    """A 400 naming the top-level field under which a body is nested more than `limit` levels deep."""
    stack: list[tuple[Any, int, str]] = [(body, 0, "")]
    while stack:
        value, depth, field = stack.pop()
        if depth > limit:
            where = f" under {field}" if field else ""
            raise HttpError(400, f"request body is nested more than {limit} levels deep{where}", param=field or None)
        if isinstance(value, dict):
            stack.extend((child, depth + 1, field or str(key)) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((child, depth + 1, field) for child in value)


async def read_json_object(request: Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise HttpError(422, f"request body must be a JSON object, got {type(body).__name__}")
    return body


_OBJECT_EXPECTED = re.compile(r"a valid dictionary or instance of \w+|a valid dictionary")


def validate(model: type[ModelT], data: Any, what: str = "request body") -> ModelT:
    """Validate data against a pydantic model; a failure is a 422 naming the field (`input[0].content`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, reason = describe_first_error(exc, data)
        where = f" at {field}" if field else ""
        raise HttpError(422, f"invalid {what}{where}: {reason}", param=field or None) from None


def describe_first_error(exc: ValidationError, data: Any) -> tuple[str, str]:
    """The field that got furthest into the data and what is wrong with it. The alternatives of a union fail
    together (`input`: not a string, not a list): they are said together, and pydantic's labels for union
    members and tags, which are not fields of the data, are left out of the path."""
    found: dict[str, list[str]] = {}
    for error in exc.errors():
        path = field_path(error["loc"], data, error["type"] == "missing")
        found.setdefault(path, [])
        message = _OBJECT_EXPECTED.sub("a JSON object", error["msg"])
        if message not in found[path]:
            found[path].append(message)
    deepest = max(found, key=lambda path: path.count(".") + path.count("["))  # the first of the deepest
    first, *others = found[deepest]
    return deepest, " or ".join([first, *(msg.removeprefix("Input should be ") for msg in others)])


def field_path(loc: tuple[int | str, ...], data: Any, missing: bool = False) -> str:
    """`a.b[0].c` for the parts of loc that are keys or indexes of data (a missing key is the last part)."""
    path, current = "", data
    for position, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            path += f"[{part}]"
            continue
        elif not (missing and position == len(loc) - 1 and isinstance(current, dict)):
            continue  # a union member's or tag's label
        path += f".{part}" if path else str(part)
    return path


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen now, so the port is ours before any child starts (no check-then-bind race)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it every
    # small answer waits for the peer's delayed ACK (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside an event loop we own: signals are ours to handle, not uvicorn's to re-raise."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop_on_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._request_exit)

    def _request_exit(self) -> None:
        self.should_exit = True


def uvicorn_config(app: ASGIApp, *, fd: int | None = None, host: str = "127.0.0.1", port: int = 0) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        fd=fd,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # nothing reads the client address; saves a middleware on every request
        timeout_keep_alive=75,
        backlog=4096,
    )


class _InProcessUvicorn(EmbeddedUvicorn):
    """uvicorn calls sys.exit() when the app's start-up fails; inside a shared event loop that SystemExit would
    escape the task and stop the loop itself, so here it ends this server only."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit:
            self.should_exit = True


@contextlib.asynccontextmanager
async def serve_in_background(app: ASGIApp, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run app on a free port inside the current event loop (for tests and tools); yields its base URL.

    When the app's start-up (its lifespan) fails, the exception it raised is raised here."""
    lifespan_errors: list[BaseException] = []

    async def recording_app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except BaseException as exc:
            if scope["type"] == "lifespan":
                lifespan_errors.append(exc)
            raise

    sock = bind_socket(host, 0)
    port = sock.getsockname()[1]
    server = _InProcessUvicorn(uvicorn_config(recording_app, host=host, port=port))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                if lifespan_errors:
                    raise lifespan_errors[0]
                raise RuntimeError("server stopped during start-up")
            await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
