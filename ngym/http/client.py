"""One outbound HTTP client per process: explicit connection limits, timeouts, and bounded retries."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from ngym.config.secrets import redact_text, redact_url

JSON_HEADERS = {"Content-Type": "application/json"}
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ClientLimits:
    # aiohttp's default pool of 100 connections would silently cap a run of thousands of rollouts.
    max_connections: int = 16384
    max_connections_per_host: int = 0  # 0: only max_connections applies
    keepalive_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    total: float = 600.0
    connect: float = 5.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 4.0
    deadline: float = 900.0  # seconds from the first attempt; no retry starts after it
    # Retry refused and dropped connections in place. Off where the caller has another server to move to.
    reconnect: bool = True

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff for the given (1-based) failed attempt."""
        return random.uniform(0, min(self.max_delay, self.base_delay * (2 ** (attempt - 1))))


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    body: bytes
    headers: Mapping[str, str]
    url: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return orjson.loads(self.body)

    def set_cookies(self) -> list[str]:
        getall = getattr(self.headers, "getall", None)
        return list(getall("Set-Cookie", [])) if getall else []


class UpstreamError(Exception):
    """A request that could not be completed: connection failure, timeout, or retries exhausted."""

    CONNECT = "connect"
    DROPPED = "dropped"
    TIMEOUT = "timeout"
    BAD_ANSWER = "bad_answer"

    def __init__(self, url: str, reason: str, kind: str):
        self.url = redact_url(url)
        self.reason = reason
        self.kind = kind
        super().__init__(f"{reason} ({self.url})")

    @property
    def server_unreachable(self) -> bool:
        """The server did not take or finish the request at all (as opposed to answering slowly)."""
        return self.kind in (self.CONNECT, self.DROPPED)


class HttpClient:
    """Owns one aiohttp session; create it once per process and pass it to whoever makes requests."""

    def __init__(
        self,
        limits: ClientLimits | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.limits = limits or ClientLimits()
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections,
            limit_per_host=self.limits.max_connections_per_host,
            keepalive_timeout=self.limits.keepalive_seconds,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeouts.total, sock_connect=self.timeouts.connect),
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies are kept per rollout by the caller, never shared
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HttpClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient.start() was not awaited")
        return self._session

    async def post_json(
        self,
        url: str,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> HttpResult:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        merged = {**JSON_HEADERS, **headers} if headers else JSON_HEADERS
        return await self.request("POST", url, body, merged, retry=retry, timeout=timeout)

    async def get(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> HttpResult:
        return await self.request("GET", url, None, headers, retry=retry, timeout=timeout)

    async def request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> HttpResult:
        """Send a request; retry 429/5xx and dropped connections with jittered backoff within the policy.

        Returns the last answer for HTTP statuses (the caller decides what a 4xx means); raises UpstreamError
        when no answer could be had.
        """
        policy = retry or self.retry
        started = time.monotonic()
        # aiohttp reads timeout=None as "no timeout at all", so the session's own timeouts are passed explicitly.
        client_timeout = (
            aiohttp.ClientTimeout(total=timeout, sock_connect=self.timeouts.connect)
            if timeout is not None
            else self.session.timeout
        )
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.session.request(
                    method, url, data=body, headers=headers, timeout=client_timeout
                ) as resp:
                    result = HttpResult(resp.status, await resp.read(), resp.headers, url)
                if result.status not in RETRYABLE_STATUSES or not _may_retry(policy, attempt, started):
                    return result
            except aiohttp.ConnectionTimeoutError:
                # A server that silently drops packets: unreachable, like a refused connection (not a slow answer).
                if not policy.reconnect or not _may_retry(policy, attempt, started):
                    reason = f"cannot connect: no answer to connecting within {self.timeouts.connect:g} s"
                    raise UpstreamError(url, reason, UpstreamError.CONNECT) from None
            except TimeoutError:
                limit = timeout if timeout is not None else self.timeouts.total
                raise UpstreamError(
                    url, f"no answer within the {limit:g} s request timeout", UpstreamError.TIMEOUT
                ) from None
            except aiohttp.ClientConnectorError as exc:
                if not policy.reconnect or not _may_retry(policy, attempt, started):
                    errno = exc.os_error.errno
                    reason = f"cannot connect: {os.strerror(errno) if errno else exc.os_error}"
                    raise UpstreamError(url, reason, UpstreamError.CONNECT) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                # ClientConnectionError: resets (ClientConnectionResetError) and other broken connections too.
                if not policy.reconnect or not _may_retry(policy, attempt, started):
                    reason = f"connection dropped: {type(exc).__name__}"
                    raise UpstreamError(url, reason, UpstreamError.DROPPED) from None
            except aiohttp.ClientError as exc:
                # An answer that is not HTTP aiohttp can read (e.g. a broken header): the server answered, badly.
                reason = f"unreadable answer: {type(exc).__name__}: {_error_text(exc)}"
                raise UpstreamError(url, reason, UpstreamError.BAD_ANSWER) from None
            await asyncio.sleep(policy.delay(attempt))


def _error_text(exc: aiohttp.ClientError) -> str:
    """An aiohttp error's own words, without the URL it may repeat (with its password) and at most one line."""
    message = getattr(exc, "message", None)
    text = str(message if isinstance(message, str) and message else exc)
    return redact_text(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)[:300]


def _may_retry(policy: RetryPolicy, attempt: int, started: float) -> bool:
    return attempt < policy.max_attempts and time.monotonic() - started < policy.deadline
