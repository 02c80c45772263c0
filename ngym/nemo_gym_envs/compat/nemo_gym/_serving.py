"""Serve a FastAPI app on the socket ng_run passed this process, until SIGTERM or SIGINT."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn


def serve_app(app: Any, fd: int | None) -> None:
    if fd is None:
        raise RuntimeError("no listening socket was passed to this environment process")
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_keep_alive=30, timeout_graceful_shutdown=1
    )
    uvicorn.Server(config).run(sockets=[sock])
