"""Where the other server instances of a run listen: one URL per replica, by instance name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from ngym.config.errors import ConfigError
from ngym.config.instances import ServerRef, iter_instances, server_url


class DirectoryEntry(BaseModel):
    """One instance: its kind and the base URL of each of its replicas (no trailing slash; the first is `url`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server_type: str
    implementation: str
    urls: tuple[str, ...] = ()


def directory_from_config(config: dict[str, Any]) -> dict[str, DirectoryEntry]:
    """The instances of a resolved configuration at the ports their sections give (in-process use and tests)."""
    return {
        spec.name: DirectoryEntry(
            server_type=spec.server_type,
            implementation=spec.implementation,
            urls=(server_url(spec.section),) if spec.section.get("port") is not None else (),
        )
        for spec in iter_instances(config)
    }


class Directory:
    def __init__(self, entries: Mapping[str, DirectoryEntry]) -> None:
        self._entries = dict(entries)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Directory:
        return cls(directory_from_config(config))

    def entry(self, target: str | ServerRef | dict[str, Any]) -> tuple[str, DirectoryEntry]:
        """An instance given by name, reference, or reference dict, checked against the reference's type."""
        if isinstance(target, dict):
            target = ServerRef(str(target.get("type")), str(target.get("name")))
        name = target.name if isinstance(target, ServerRef) else target
        try:
            entry = self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(f"no server instance named {name!r} (known: {known})") from None
        if isinstance(target, ServerRef) and entry.server_type != target.server_type:
            raise ConfigError(f"{name!r} is a {entry.server_type} instance, not {target.server_type}")
        return name, entry

    def urls(self, target: str | ServerRef | dict[str, Any]) -> list[str]:
        """Base URL of every replica of an instance (no trailing slash)."""
        name, entry = self.entry(target)
        if not entry.urls:
            raise ConfigError(f"server instance {name!r} has no address yet (is it started by ng_run?)")
        return list(entry.urls)

    def url(self, target: str | ServerRef | dict[str, Any]) -> str:
        """Base URL of an instance's first replica."""
        return self.urls(target)[0]

    def names(self, server_type: str | None = None) -> list[str]:
        return sorted(n for n, e in self._entries.items() if server_type is None or e.server_type == server_type)
