"""The stand-in as a server: in-process (`async with StandinServer(script)`, or `with` for a background thread)
or standalone (`python -m testkit.standin --port N`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from testkit.standin.app import StandinApp, _ExposeTransportProtocol, build_app
from testkit.standin.script import Delay, RequestLog, StandinScript
from testkit.standin.wire import DEFAULT_MAX_MODEL_LEN, DEFAULT_REPLY
from testkit.tiny_model import SERVED_MODEL_NAME


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
