"""Sandbox providers by name: `create_provider({name: settings})`.

ngym's `nemo_gym` runs one provider itself, `local` (commands as subprocesses in a working directory). NeMo Gym's
container and cloud providers (docker, apptainer, enroot, daytona, e2b, ecs_fargate, opensandbox, openshell) are
known by name so a server that names one starts; using one (creating a sandbox, running a command) raises
`SandboxCreateError` naming the provider and what it would need. `register_provider` adds a provider class of the
caller's own, and packages publishing one under the `nemo_gym.sandbox_providers` entry point group are found too.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

from .base import SandboxCreateError, SandboxExecResult, SandboxHandle, SandboxProvider, SandboxSpec, SandboxStatus
from .local import LocalProvider

ENTRY_POINT_GROUP = "nemo_gym.sandbox_providers"

# What each provider ngym does not run would need on this machine.
CONTAINER_PROVIDERS = {
    "docker": "the `docker` command and a running Docker daemon, and the task's image",
    "apptainer": "the `apptainer` command and the task's image",
    "enroot": "the `enroot` command and the task's image",
    "daytona": "Daytona's service, its SDK and credentials",
    "e2b": "E2B's service, its SDK and an API key",
    "ecs_fargate": "AWS ECS Fargate, boto3 and AWS credentials",
    "opensandbox": "an OpenSandbox server and its SDK",
    "openshell": "an OpenShell gateway and its client",
}


class UnavailableProvider:
    """A provider ngym's `nemo_gym` knows by name and does not run: every use is an error that says why."""

    name = "unavailable"
    needs = ""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def _refuse(self) -> NoReturn:
        raise SandboxCreateError(
            f"sandbox provider {self.name!r} cannot run here: ngym's nemo_gym does not implement it (it needs "
            f"{self.needs}); only the 'local' provider runs, which executes commands on this machine without an image"
        )

    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        self._refuse()

    async def exec(self, handle: SandboxHandle, command: str, **_options: Any) -> SandboxExecResult:
        self._refuse()

    async def upload_file(self, handle: SandboxHandle, source_path: Path, target_path: str) -> None:
        self._refuse()

    async def download_file(self, handle: SandboxHandle, source_path: str, target_path: Path) -> None:
        self._refuse()

    async def status(self, handle: SandboxHandle) -> SandboxStatus:
        return SandboxStatus.UNKNOWN

    async def close(self, handle: SandboxHandle) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _unavailable(name: str, needs: str) -> type[UnavailableProvider]:
    return type(f"Unavailable_{name}", (UnavailableProvider,), {"name": name, "needs": needs})


_BUILTIN: dict[str, type[Any]] = {"local": LocalProvider}
_BUILTIN.update({name: _unavailable(name, needs) for name, needs in CONTAINER_PROVIDERS.items()})
_REGISTERED: dict[str, type[Any]] = {}


def _published() -> dict[str, Any]:
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def register_provider(name: str, provider_class: type[Any], *, override: bool = False) -> None:
    if not name:
        raise ValueError("Provider name must be non-empty")
    if not override and (name in _REGISTERED or name in _BUILTIN):
        raise ValueError(f"Sandbox provider {name!r} is already registered")
    _REGISTERED[name] = provider_class


def get_provider_class(name: str) -> type[Any]:
    """A registered provider, else a built-in one, else one a package publishes."""
    found = _REGISTERED.get(name) or _BUILTIN.get(name)
    if found is not None:
        return found
    published = _published().get(name)
    if published is not None:
        return published.load()
    raise ValueError(f"Unknown sandbox provider {name!r}. Available providers: {', '.join(list_providers())}")


def create_provider(config: Mapping[str, Any]) -> SandboxProvider:
    """The provider of a single-key `{name: settings}` config."""
    if len(config) != 1:
        raise ValueError("Sandbox provider config must contain exactly one provider name")
    name, settings = next(iter(config.items()))
    if not isinstance(name, str) or not name:
        raise ValueError("Sandbox provider name must be a non-empty string")
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"Sandbox provider {name!r} config must be a mapping")
    provider: SandboxProvider = get_provider_class(name)(**dict(settings or {}))
    return provider


def list_providers() -> list[str]:
    return sorted({*_REGISTERED, *_BUILTIN, *_published()})
