"""A recording HTTP relay, for tests that must see what one server sent another (e.g. how often a task row
reached an agent's /run).

``Relay(target).app()`` forwards every request to ``target`` with the same method, path, query and body, and
answers with the target's status and body. It counts what it forwarded by path and body (``seen``, ``bodies``).
An optional ``rewrite`` changes an answer's body on the way back (e.g. a head server's /servers listing made to
point at another relay).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})
FORWARDED_ANSWER_HEADERS = ("content-type", "set-cookie")
Rewrite = Callable[[str, bytes], bytes]  # (path, answer body) -> answer body


class Relay:
    def __init__(self, target: str, rewrite: Rewrite | None = None) -> None:
        self.target = target.rstrip("/")
        self.rewrite = rewrite
        self.seen: Counter[tuple[str, bytes]] = Counter()
        self._http: aiohttp.ClientSession | None = None

    def bodies(self, path: str) -> list[bytes]:
        """The body of every request forwarded to `path` (a body sent twice is listed twice)."""
        return [body for (seen_path, body), n in self.seen.items() if seen_path == path for _ in range(n)]

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/{path:path}", self._forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH"])],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        # No total timeout: a relay must not cut what its callers allow; no pool cap for large runs.
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        try:
            yield
        finally:
            await self._http.close()
            self._http = None

    async def _forward(self, request: Request) -> Response:
        if self._http is None:
            raise RuntimeError("the relay's app must run with its lifespan")
        body = await request.body()
        path = request.url.path
        self.seen[(path, body)] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = self.target + path + (f"?{request.url.query}" if request.url.query else "")
        async with self._http.request(request.method, url, data=body, headers=headers) as answer:
            content = await answer.read()
            forwarded = [(k, v) for k, v in answer.headers.items() if k.lower() in FORWARDED_ANSWER_HEADERS]
            status = answer.status
        if self.rewrite is not None:
            content = self.rewrite(path, content)
        response = Response(content, status_code=status)
        for key, value in forwarded:
            response.headers.append(key, value)
        return response
