"""Serve a FastAPI app on the socket ng_run passed this process, until SIGTERM or SIGINT. Like every ngym server,
it answers only to its own host names (ngym.http.hosts): a foreign `Host` or a page of another site gets a 403."""

from __future__ import annotations

import json
import socket
from typing import Any

import uvicorn

from ngym.http.hosts import ALLOWED_HOSTS_KEY, HostCheck, allowed_hosts, hosts_setting


def serve_app(app: Any, fd: int | None, settings: dict[str, Any] | None = None, host: str | None = None) -> None:
    """`settings`: the run-wide settings (`allowed_hosts`); `host`: the host this server is configured on."""
    if fd is None:
        raise RuntimeError("no listening socket was passed to this environment process")
    sock = socket.socket(fileno=fd)
    names = allowed_hosts(host or str(sock.getsockname()[0]), hosts_setting((settings or {}).get(ALLOWED_HOSTS_KEY)))
    config = uvicorn.Config(
        OwnHostsOnly(app, HostCheck(names)),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run(sockets=[sock])


class OwnHostsOnly:
    """ASGI: a request whose `Host` or `Origin` does not name this server is answered 403 in OpenAI's error shape."""

    def __init__(self, app: Any, check: HostCheck) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            refusal = self.check.refusal(scope["headers"])
            if refusal is not None:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                message = f"{refusal}; add the name to {ALLOWED_HOSTS_KEY} if it is one"
                error = {"message": message, "type": "invalid_request_error", "param": None, "code": "host_not_allowed"}
                body = json.dumps({"error": error}).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 403, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
