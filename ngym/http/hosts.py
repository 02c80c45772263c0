"""Which host names a server answers to: a loopback server refuses foreign pages (DNS rebinding, cross-site posts).

A web page whose name an attacker re-points at 127.0.0.1 reaches a loopback server with its own name in `Host`
(`evil.example:7860`); a page of another site that posts to `http://127.0.0.1:port/run` says where it comes from in
`Origin`. Every ngym server answers only requests whose `Host` (and `Origin`, when a browser sends one) names it:
127.0.0.1, localhost and [::1], the host it is configured to listen on, this machine's own names when it listens
on every interface (0.0.0.0 or ::), and the names given in `allowed_hosts`. Anything else is a 403 with no data.
The port is not checked (a tunnel or a proxy may change it); names are compared without case and a trailing dot.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

from ngym.config.errors import ConfigError

ALLOWED_HOSTS_KEY = "allowed_hosts"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
_CACHE_LIMIT = 1024  # distinct Host/Origin values remembered; clients send a handful


def host_name(value: str) -> str:
    """The name in a `Host` value (`Example.com:80` -> `example.com`, `[::1]:7860` -> `::1`); IP addresses in
    their usual form. "" when there is none."""
    value = value.strip().lower()
    if value.startswith("["):
        name = value[1 : value.find("]")] if "]" in value else ""
    else:
        name, colon, port = value.rpartition(":")
        if not colon or ":" in name or not port.isdigit():  # no port, or a bare IPv6 address
            name = value
    name = name.rstrip(".") if name not in (".", "") else ""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def origin_name(value: str) -> str:
    """The host name of an `Origin` (`http://localhost:7860` -> `localhost`); "" for `null` or no scheme."""
    scheme, sep, rest = value.strip().partition("://")
    if not sep or not scheme:
        return ""
    return host_name(rest.split("/", 1)[0].rpartition("@")[2])


def machine_names() -> set[str]:
    """This machine's host name and the addresses it resolves to (for a server listening on every interface)."""
    names: set[str] = set()
    with contextlib.suppress(OSError):
        hostname = socket.gethostname()
        names.add(host_name(hostname))
        for info in socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP):
            names.add(host_name(str(info[4][0]).split("%", 1)[0]))
    names.discard("")
    return names


def allowed_hosts(bound_host: str | None = None, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a server listening on `bound_host` answers to, with `extra` (the `allowed_hosts` setting)."""
    names = set(LOOPBACK_NAMES)
    if bound_host is not None:
        bound = host_name(bound_host) if bound_host not in WILDCARD_HOSTS else bound_host
        names.add(bound)
        if bound in WILDCARD_HOSTS:
            names |= machine_names()
    names |= {host_name(name) for name in extra}
    names.discard("")
    return frozenset(names)


def is_loopback(host: str) -> bool:
    name = host_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def hosts_setting(value: Any, where: str = ALLOWED_HOSTS_KEY) -> list[str]:
    """The `allowed_hosts` setting: a list of host names (or one name, or comma-separated names)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"{where} must be a list of host names (e.g. [gym.example.com, 10.0.0.5]), got {value!r}")
    names = [name.strip() for name in value if name.strip()]
    for name in names:
        if not host_name(name) or "/" in name or " " in name:
            raise ConfigError(f"{where}: {name!r} is not a host name (give names like gym.example.com, no URL)")
    return names


class HostCheck:
    """Decides, once per distinct header value, whether a request's `Host` and `Origin` name this server."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self._hosts: dict[bytes, bool] = {}
        self._origins: dict[bytes, bool] = {}

    def refusal(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """Why the request must be refused, or None. Cheap: a dict lookup per Host/Origin header."""
        for name, value in headers:
            if name == b"host":
                allowed = self._hosts.get(value)
                if allowed is None:
                    allowed = self._remember(self._hosts, value, host_name(value.decode("latin-1")) in self.names)
                if not allowed:
                    return f"Host {_shown(value)} is not a name of this server"
            elif name == b"origin":
                allowed = self._origins.get(value)
                if allowed is None:
                    allowed = self._remember(self._origins, value, origin_name(value.decode("latin-1")) in self.names)
                if not allowed:
                    return f"a page from {_shown(value)} may not use this server"
        return None

    @staticmethod
    def _remember(cache: dict[bytes, bool], value: bytes, allowed: bool) -> bool:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[value] = allowed
        return allowed


def _shown(value: bytes) -> str:
    return repr(value[:100].decode("latin-1"))
