"""Cookies kept per rollout and per server, so that concurrent rollouts never share a session."""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie

from ngym.http.client import HttpResult


class CookieStore:
    """Cookies of one rollout, per server base URL."""

    def __init__(self) -> None:
        self._by_server: dict[str, dict[str, str]] = {}

    def header(self, server_url: str) -> dict[str, str]:
        cookies = self._by_server.get(server_url)
        if not cookies:
            return {}
        return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}

    def update(self, server_url: str, result: HttpResult) -> None:
        for raw in result.set_cookies():
            parsed: SimpleCookie = SimpleCookie()
            try:
                parsed.load(raw)
            except CookieError:
                continue
            jar = self._by_server.setdefault(server_url, {})
            for name, morsel in parsed.items():
                jar[name] = morsel.value
