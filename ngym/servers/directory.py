"""Find any server of a resolved configuration by instance name."""

from __future__ import annotations

from typing import Any

from ngym.config.errors import ConfigError
from ngym.config.instances import InstanceSpec, ServerRef, iter_instances, server_url


class Directory:
    def __init__(self, config: dict[str, Any]) -> None:
        self._instances: dict[str, InstanceSpec] = {spec.name: spec for spec in iter_instances(config)}

    def spec(self, name: str) -> InstanceSpec:
        try:
            return self._instances[name]
        except KeyError:
            known = ", ".join(sorted(self._instances)) or "none"
            raise ConfigError(f"no server instance named {name!r} (known: {known})") from None

    def url(self, target: str | ServerRef | dict[str, Any]) -> str:
        """Base URL (no trailing slash) of an instance given by name, reference, or reference dict."""
        if isinstance(target, dict):
            target = ServerRef(str(target.get("type")), str(target.get("name")))
        name = target.name if isinstance(target, ServerRef) else target
        spec = self.spec(name)
        if isinstance(target, ServerRef) and spec.server_type != target.server_type:
            raise ConfigError(f"{name!r} is a {spec.server_type} instance, not {target.server_type}")
        if spec.section.get("port") is None:
            raise ConfigError(f"server instance {name!r} has no port yet (is it started by ng_run?)")
        return server_url(spec.section)

    def names(self, server_type: str | None = None) -> list[str]:
        return sorted(n for n, s in self._instances.items() if server_type is None or s.server_type == server_type)
