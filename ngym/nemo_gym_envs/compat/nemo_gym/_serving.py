"""Serve a FastAPI app on the socket ng_run passed this process, until SIGTERM or SIGINT. Like every ngym server,
it answers only to its own host names (ngym.http.hosts): a foreign `Host` or a page of another site gets a 403."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from ngym.http.guard import refused_foreign_host
from ngym.http.hosts import ALLOWED_HOSTS_KEY, HostCheck, allowed_hosts, hosts_setting


def serve_app(
    app: Any, fd: int | None, name: str, settings: dict[str, Any] | None = None, host: str | None = None
) -> None:
    """`name`: the instance's; `settings`: the run-wide settings (`allowed_hosts`); `host`: where it is configured."""
    if fd is None:
        raise RuntimeError("no listening socket was passed to this environment process")
    sock = socket.socket(fileno=fd)
    names = allowed_hosts(host or str(sock.getsockname()[0]), hosts_setting((settings or {}).get(ALLOWED_HOSTS_KEY)))
    config = uvicorn.Config(
        OwnHostsOnly(app, HostCheck(names), name),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run(sockets=[sock])


class OwnHostsOnly:
    """ASGI: a request whose `Host` or `Origin` does not name this server is refused, as by every ngym server."""

    def __init__(self, app: Any, check: HostCheck, name: str) -> None:
        self.app = app
        self.check = check
        self.name = name

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not await refused_foreign_host(self.check, self.name, scope, receive, send):
            await self.app(scope, receive, send)
