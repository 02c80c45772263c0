"""The one object that sends requests to vLLM servers: it owns the pool, retries, failover and health probes.

Any request of a session (chat completion, render, generate, derender, tokenize) goes through `post`, which sends
it to the session's server and moves the session when that server cannot be reached. Callers only translate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from ngym.config.errors import ConfigError
from ngym.http.client import NO_RETRY, HttpClient, HttpResult, RetryPolicy, UpstreamError
from ngym.upstream.pool import Session, Upstream, UpstreamPool

SESSION_HEADER = "X-Session-ID"


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    """An HTTP answer from a vLLM server and the server that gave it."""

    result: HttpResult
    upstream: Upstream


class NoAnswer(Exception):
    """No vLLM server answered: `error` says why for the last one tried."""

    def __init__(self, error: UpstreamError, upstream: Upstream) -> None:
        super().__init__(f"vLLM at {upstream.shown}: {error.reason}")
        self.error = error
        self.upstream = upstream


class UpstreamClient:
    def __init__(
        self,
        base_urls: list[str],
        http: HttpClient,
        headers: Mapping[str, str],
        *,
        health_check_interval_s: float = 2.0,
    ) -> None:
        self.http = http
        self.headers = dict(headers)
        self.health_check_interval_s = health_check_interval_s
        self._health_task: asyncio.Task[None] | None = None
        self.use(base_urls)

    def use(self, base_urls: list[str]) -> None:
        """Serve from these vLLM servers (at construction, or once a launcher knows where its vLLMs listen)."""
        self.pool = UpstreamPool(base_urls)
        # Each server's request headers, once: a URL's user:password is its Basic Authorization header.
        self.headers_of = [_with_authorization(self.headers, upstream) for upstream in self.pool.upstreams]
        # With several servers a refused or dropped connection moves the session at once instead of retrying
        # in place; 429/5xx answers are retried on the same server either way.
        several = len(self.pool.upstreams) > 1
        self.retry: RetryPolicy | None = dataclasses.replace(self.http.retry, reconnect=False) if several else None

    @property
    def upstreams(self) -> list[Upstream]:
        return self.pool.upstreams

    def start(self) -> None:
        """Start probing servers that left rotation (call from the running event loop)."""
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._probe_down_upstreams())

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None

    async def post(self, session: Session, path: str, body: bytes) -> UpstreamAnswer:
        """POST `body` (JSON) to `path` on the session's server. A server that cannot be reached leaves rotation
        and the session moves to the next one; NoAnswer when none answered."""
        tried: set[int] = set()
        while True:
            upstream = self.pool.choose(session, frozenset(tried))
            upstream.in_flight += 1
            upstream.requests += 1
            headers = {**self.headers_of[upstream.index], SESSION_HEADER: session.session_id}
            try:
                result = await self.http.post_json(upstream.url(path), body, headers, retry=self.retry)
            except UpstreamError as exc:
                if exc.server_unreachable:
                    self.pool.mark_down(upstream)
                    tried.add(upstream.index)
                    if len(tried) < len(self.pool.upstreams):
                        continue
                raise NoAnswer(exc, upstream) from None
            finally:
                upstream.in_flight -= 1
            session.served_by = upstream.index
            return UpstreamAnswer(result, upstream)

    async def get(self, upstream: Upstream, path: str, timeout: float) -> HttpResult:
        """One GET on one server, not retried (start-up checks)."""
        return await self.http.get(upstream.url(path), self.headers_of[upstream.index], retry=NO_RETRY, timeout=timeout)

    async def probe(self, upstream: Upstream, path: str, body: bytes, timeout: float) -> HttpResult:
        """One POST on one server, not retried and outside any session (start-up checks)."""
        headers = self.headers_of[upstream.index]
        return await self.http.post_json(upstream.url(path), body, headers, retry=NO_RETRY, timeout=timeout)

    async def _probe_down_upstreams(self) -> None:
        while True:
            await asyncio.sleep(self.health_check_interval_s)
            for upstream in self.pool.down:
                with contextlib.suppress(UpstreamError):
                    headers = self.headers_of[upstream.index]
                    result = await self.http.get(upstream.root_url + "/health", headers, retry=NO_RETRY, timeout=5)
                    if result.ok:
                        self.pool.mark_up(upstream)


def _with_authorization(headers: dict[str, str], upstream: Upstream) -> dict[str, str]:
    if upstream.authorization is None:
        return headers
    if any(name.lower() == "authorization" for name in headers):
        raise ConfigError(
            f"base_url {upstream.shown} carries a user:password and an Authorization header is also set "
            "(api_key, or default_headers): both would be the request's Authorization; keep one"
        )
    return {**headers, "Authorization": upstream.authorization}
