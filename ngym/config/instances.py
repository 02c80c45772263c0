"""Server instances in a resolved configuration: their shape, references between them, and addresses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ngym.config.errors import ConfigError
from ngym.config.load import Locations

SERVER_TYPES = ("responses_api_models", "resources_servers", "responses_api_agents")
DEFAULT_HOST = "127.0.0.1"
HEAD_SERVER_KEY = "head_server"
DEFAULT_HEAD_PORT = 11000
# Where a run's servers keep what it leaves behind (local_vllm_model: vLLM's logs); ng_run sets it.
RUN_DIR_KEY = "run_dir"
ERROR_ON_ALMOST_SERVERS_KEY = "error_on_almost_servers"


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """One server instance: `<name>: {<server_type>: {<implementation>: {entrypoint: ..., ...}}}`."""

    name: str
    server_type: str
    implementation: str
    section: dict[str, Any]

    @property
    def entrypoint(self) -> str:
        return str(self.section["entrypoint"])

    @property
    def key_path(self) -> str:
        return f"{self.name}.{self.server_type}.{self.implementation}"

    def code_path(self, root: Path) -> Path:
        return root / self.server_type / self.implementation / self.entrypoint

    @property
    def host(self) -> str:
        return str(self.section.get("host") or DEFAULT_HOST)

    @property
    def port(self) -> int | None:
        port = self.section.get("port")
        return int(port) if port is not None else None


@dataclass(frozen=True, slots=True)
class ServerRef:
    server_type: str
    name: str


def iter_instances(config: dict[str, Any]) -> Iterator[InstanceSpec]:
    for name, value in config.items():
        if _is_instance(value):
            server_type, inner = next(iter(value.items()))
            implementation, section = next(iter(inner.items()))
            yield InstanceSpec(name, server_type, implementation, section)


# Whether an instance whose code is not under the root is found elsewhere (ng_run asks ngym.nemo_gym_envs.detect:
# a NeMo Gym server in its config file's tree). Passed in, so this module imports nothing above it.
FoundElsewhere = Callable[[InstanceSpec, Path, Locations], bool]


def _nowhere_else(_spec: InstanceSpec, _root: Path, _locations: Locations) -> bool:
    return False


def find_instances(
    config: dict[str, Any], root: Path, locations: Locations, found_elsewhere: FoundElsewhere = _nowhere_else
) -> dict[str, InstanceSpec]:
    """All server instances whose code is under `root` or `found_elsewhere`; "almost servers" (a server type key
    with the wrong shape) and instances whose code is nowhere are errors unless `error_on_almost_servers: false`."""
    instances = {spec.name: spec for spec in iter_instances(config)}
    problems = [p for name, value in config.items() if name not in instances for p in _almost_server(name, value)]
    found = {
        name: spec
        for name, spec in instances.items()
        if spec.code_path(root).is_file() or found_elsewhere(spec, root, locations)
    }
    for name, spec in instances.items():
        if name not in found:
            problems.append(
                f"{spec.key_path}.entrypoint{locations.describe(spec.key_path)}: {spec.code_path(root)} does not "
                f"exist (the code of an instance is <server type>/<implementation>/<entrypoint>)"
            )
    if problems and config.get(ERROR_ON_ALMOST_SERVERS_KEY, True) is not False:
        listing = "\n  ".join(problems)
        raise ConfigError(
            f"configuration sections that look like servers but are not valid:\n  {listing}\n"
            f"(set {ERROR_ON_ALMOST_SERVERS_KEY}: false to ignore them)"
        )
    return found


def _is_instance(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    server_type, inner = next(iter(value.items()))
    if server_type not in SERVER_TYPES or not isinstance(inner, dict) or len(inner) != 1:
        return False
    section = next(iter(inner.values()))
    return isinstance(section, dict) and isinstance(section.get("entrypoint"), str)


def _almost_server(name: str, value: Any) -> list[str]:
    if not isinstance(value, dict) or not any(key in SERVER_TYPES for key in value):
        return []
    if len(value) != 1:
        return [f"{name}: a server instance has exactly one server-type key, found {sorted(value)}"]
    server_type, inner = next(iter(value.items()))
    if not isinstance(inner, dict) or len(inner) != 1:
        found = sorted(inner) if isinstance(inner, dict) else type(inner).__name__
        return [f"{name}.{server_type}: expected exactly one implementation name, found {found}"]
    implementation, section = next(iter(inner.items()))
    if not isinstance(section, dict):
        return [f"{name}.{server_type}.{implementation}: expected a mapping of settings"]
    return [f"{name}.{server_type}.{implementation}: missing 'entrypoint' (for example entrypoint: app.py)"]


def find_references(value: Any, path: str) -> Iterator[tuple[str, ServerRef]]:
    """Every `{type: <server type>, name: <instance>}` inside value, with its dotted path."""
    if isinstance(value, dict):
        if set(value) == {"type", "name"} and value["type"] in SERVER_TYPES and isinstance(value["name"], str):
            yield path, ServerRef(value["type"], value["name"])
            return
        for key, item in value.items():
            yield from find_references(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_references(item, f"{path}[{index}]")


def check_references(instances: dict[str, InstanceSpec], locations: Locations) -> None:
    problems = []
    for spec in instances.values():
        for path, ref in find_references(spec.section, spec.key_path):
            target = instances.get(ref.name)
            if target is None or target.server_type != ref.server_type:
                known = sorted(n for n, s in instances.items() if s.server_type == ref.server_type)
                problems.append(
                    f"{path}{locations.describe(path)} refers to {ref.server_type} instance {ref.name!r}, "
                    f"which is not defined; defined {ref.server_type}: {', '.join(known) or 'none'}. "
                    "Add the config file that defines it to config_paths."
                )
    if problems:
        raise ConfigError("\n".join(problems))


def head_address(config: dict[str, Any]) -> tuple[str, int]:
    head = config.get(HEAD_SERVER_KEY) or {}
    if not isinstance(head, dict):
        raise ConfigError(f"{HEAD_SERVER_KEY} must be a mapping with host and port, got {head!r}")
    return str(head.get("host") or DEFAULT_HOST), int(head.get("port") or DEFAULT_HEAD_PORT)


def connect_host(host: str) -> str:
    """The address to connect to for a server listening on host."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def server_url(section: dict[str, Any]) -> str:
    host = connect_host(str(section.get("host") or DEFAULT_HOST))
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{section['port']}"
