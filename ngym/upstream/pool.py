"""A pool of vLLM servers: sessions stay on one server, new sessions go to the least-loaded healthy one.

A session's server is carried in its cookie ("<session id>.<server index>"), so every worker process of
the model server routes it the same way and no per-session state is kept here.
"""

from __future__ import annotations

import base64
import itertools
import zlib
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ngym.config.secrets import redact_url

UPSTREAM_COOKIE = "ngym_upstream"


@dataclass(slots=True)
class Upstream:
    index: int
    base_url: str  # ends in /v1, without user:password (those become `authorization`)
    authorization: str | None = None  # "Basic ..." from credentials written into the configured URL
    in_flight: int = 0
    healthy: bool = True
    requests: int = 0
    times_down: int = 0  # how often it left rotation (ngym.observability reports it)

    @classmethod
    def from_url(cls, index: int, url: str) -> Upstream:
        base_url, authorization = split_credentials(url.rstrip("/"))
        return cls(index, base_url, authorization)

    @property
    def shown(self) -> str:
        """base_url as it may appear in messages."""
        return redact_url(self.base_url)

    @property
    def models_url(self) -> str:
        return self.base_url + "/models"

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def shown_url(self, path: str) -> str:
        """url(path) as it may appear in messages."""
        return redact_url(self.url(path))

    def url(self, path: str) -> str:
        """An address on this server; `path` is from the server root, e.g. '/v1/chat/completions'."""
        return self.base_url[:-3] + path


def split_credentials(url: str) -> tuple[str, str | None]:
    """`http://user:key@host/v1` -> (`http://host/v1`, the Basic Authorization header for user:key). The URL
    without credentials is what every request and message uses; the header is added to requests only."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return redact_url(url), "Basic " + base64.b64encode(pair.encode()).decode()


@dataclass(slots=True)
class Session:
    session_id: str
    pinned: int | None  # the server index the session's cookie names, if any
    from_header: bool = False
    served_by: int | None = None  # the server that answered this request's last upstream call

    @property
    def preferred(self) -> int | None:
        """Where the next call of this request goes: the server already serving it, else the cookie's."""
        return self.served_by if self.served_by is not None else self.pinned

    def cookie_value(self, index: int) -> str:
        return f"{self.session_id}.{index}"


def parse_session_cookie(value: str | None) -> tuple[str, int | None] | None:
    if not value:
        return None
    session_id, _, index = value.rpartition(".")
    if not session_id or not index.isdigit():
        return None
    return session_id, int(index)


class UpstreamPool:
    def __init__(self, base_urls: list[str]) -> None:
        if not base_urls:
            raise ValueError("at least one base_url is needed")
        self.upstreams = [Upstream.from_url(i, url) for i, url in enumerate(base_urls)]
        self._rotation = itertools.cycle(range(len(self.upstreams)))

    def choose(self, session: Session, exclude: frozenset[int] = frozenset()) -> Upstream:
        """The session's server if it is healthy; else a hashed pick for header-named sessions, else the
        least-loaded healthy server (ties broken in rotation)."""
        upstreams = self.upstreams
        preferred = session.preferred
        if preferred is not None and 0 <= preferred < len(upstreams):
            pinned = upstreams[preferred]
            if pinned.healthy and pinned.index not in exclude:
                return pinned
        candidates = [u for u in upstreams if u.healthy and u.index not in exclude]
        if not candidates:
            candidates = [u for u in upstreams if u.index not in exclude] or upstreams
        if session.from_header and preferred is None:
            return candidates[zlib.crc32(session.session_id.encode()) % len(candidates)]
        start = next(self._rotation)
        n = len(upstreams)
        return min(candidates, key=lambda u: (u.in_flight, (u.index - start) % n))

    def mark_down(self, upstream: Upstream) -> None:
        if upstream.healthy:
            upstream.times_down += 1
        upstream.healthy = False

    def mark_up(self, upstream: Upstream) -> None:
        upstream.healthy = True

    @property
    def down(self) -> list[Upstream]:
        return [u for u in self.upstreams if not u.healthy]
