"""What a sandbox provider and its callers exchange: the request (`SandboxSpec`, `SandboxResources`), the handle a
provider returns, a command's result, the lifecycle status, the errors, and the provider protocol with its optional
capabilities (checked with `isinstance`, as NeMo Gym's API checks them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit


class SandboxStatus(str, Enum):  # noqa: UP042 (NeMo Gym's str() of a member)
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"
    UNKNOWN = "unknown"


class SandboxPtyError(RuntimeError):
    """A terminal session failed other than by its process exiting."""


class SandboxCreateError(RuntimeError):
    """A provider could not create a sandbox."""


class SandboxCreateVerificationError(SandboxCreateError):
    """A new sandbox failed the provider's readiness checks."""


@dataclass(frozen=True)
class SandboxEndpoint:
    """An absolute URL to a service inside a sandbox, with the headers its provider requires."""

    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = self.endpoint.strip() if isinstance(self.endpoint, str) else ""
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            raise ValueError("Sandbox endpoint must be a non-empty absolute URL")
        if not isinstance(self.headers, Mapping):
            raise TypeError("Sandbox endpoint headers must be a mapping")
        object.__setattr__(self, "endpoint", url)
        object.__setattr__(self, "headers", {str(k): str(v) for k, v in self.headers.items()})


@dataclass(frozen=True)
class SandboxResources:
    cpu: float | None = None
    memory_mib: int | None = None
    disk_gib: int | None = None
    gpu: int | None = None
    gpu_type: str | None = None

    @classmethod
    def from_mapping(cls, resources: Mapping[str, Any] | None) -> SandboxResources:
        """From a config mapping; an unknown key is an error naming the known ones."""
        if resources is None:
            return cls()
        known = set(cls.__dataclass_fields__)
        unknown = set(resources) - known
        if unknown:
            listed = ", ".join(sorted(unknown))
            raise ValueError(f"Unknown sandbox resource keys: {listed}. Expected keys: {', '.join(sorted(known))}")
        casts: dict[str, Any] = {"cpu": float, "memory_mib": int, "disk_gib": int, "gpu": int, "gpu_type": str}
        return cls(**{k: casts[k](v) for k, v in resources.items() if v is not None})


def _port(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueError(f"Invalid sandbox TCP port: {raw!r}")
    try:
        port = int(raw)
    except ValueError as exc:
        raise ValueError(f"Invalid sandbox TCP port: {raw!r}") from exc
    if not 1 <= port <= 65535:
        raise ValueError(f"Sandbox TCP port must be between 1 and 65535, got {port}")
    return port


@dataclass(frozen=True)
class SandboxSpec:
    """What to create: image, limits, working directory, environment, files to place, service ports."""

    image: str | None = None
    ttl_s: int | float | None = None
    ready_timeout_s: int | float | None = None
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    resources: SandboxResources | Mapping[str, Any] = field(default_factory=SandboxResources)
    entrypoint: list[str] | None = None
    provider_options: dict[str, Any] = field(default_factory=dict)
    ports: tuple[int, ...] | list[int] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.resources, SandboxResources):
            object.__setattr__(self, "resources", SandboxResources.from_mapping(self.resources))
        if not isinstance(self.ports, list | tuple):
            raise TypeError("Sandbox ports must be a list or tuple of TCP port numbers")
        ports = [_port(raw) for raw in self.ports]
        duplicated = sorted({port for port in ports if ports.count(port) > 1})
        if duplicated:
            raise ValueError(f"Duplicate sandbox TCP port: {duplicated[0]}")
        object.__setattr__(self, "ports", tuple(ports))


@dataclass
class SandboxHandle:
    """A created sandbox; `raw` is the provider's own state, passed back to it."""

    sandbox_id: str
    provider_name: str
    raw: Any


@dataclass(frozen=True)
class SandboxExecResult:
    """A command's output and exit code (`error_type` set when the sandbox, not the command, failed)."""

    stdout: str | None
    stderr: str | None
    return_code: int
    error_type: str | None = None


ExecResult = SandboxExecResult


@dataclass(frozen=True)
class SandboxPtySpec:
    command: str | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    rows: int = 24
    cols: int = 80
    user: str | int | None = None
    pty: bool = True


class SandboxProvider(Protocol):
    """The runtime behind a sandbox: create, run, move files, report, end."""

    name: str

    async def create(self, spec: SandboxSpec) -> SandboxHandle: ...

    async def exec(
        self,
        handle: SandboxHandle,
        command: str,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: int | float | None = None,
        user: str | int | None = None,
    ) -> SandboxExecResult: ...

    async def upload_file(self, handle: SandboxHandle, source_path: Path, target_path: str) -> None: ...

    async def download_file(self, handle: SandboxHandle, source_path: str, target_path: Path) -> None: ...

    async def status(self, handle: SandboxHandle) -> SandboxStatus: ...

    async def close(self, handle: SandboxHandle) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SupportsSandboxBackgroundServices(Protocol):
    async def exec_with_background_services(
        self, handle: SandboxHandle, command: str, *, cwd: str | None = None, timeout_s: int | float | None = None
    ) -> SandboxExecResult: ...


@runtime_checkable
class SupportsSandboxNetwork(Protocol):
    def validate_networking(self) -> None: ...

    async def network_address(self, handle: SandboxHandle) -> str: ...

    async def set_hosts(self, handle: SandboxHandle, hosts: Mapping[str, str]) -> None: ...


@runtime_checkable
class SupportsSandboxRuntimeRequirements(Protocol):
    def validate_runtime_requirements(
        self, *, cap_add: tuple[str, ...], shm_size: int | None
    ) -> dict[str, str] | None: ...

    async def configure_runtime(
        self, handle: SandboxHandle, *, cap_add: tuple[str, ...], shm_size: int | None
    ) -> None: ...


@runtime_checkable
class SupportsSandboxPortForwarding(Protocol):
    def validate_port_forwarding(self) -> None: ...

    async def forward_ports(
        self, handle: SandboxHandle, target_address: str, ports: tuple[int, ...], *, ready_file: str
    ) -> None: ...


@runtime_checkable
class SupportsSandboxSharedStorage(Protocol):
    def shared_volume_options(self, source: str | None, target: str, *, read_only: bool = False) -> dict[str, Any]: ...

    def shared_volume_metadata(self) -> dict[str, str]: ...


@runtime_checkable
class SupportsSandboxEndpoint(Protocol):
    async def endpoint(self, handle: SandboxHandle, port: int) -> SandboxEndpoint: ...


@runtime_checkable
class SupportsSandboxPauseResume(Protocol):
    async def pause(self, handle: SandboxHandle) -> None: ...

    async def resume(self, handle: SandboxHandle) -> None: ...


@runtime_checkable
class SandboxPtySession(Protocol):
    """One live terminal (an async context manager)."""

    session_id: str
    mode: str | None

    @property
    def closed(self) -> bool: ...

    async def read(self, *, timeout_s: float | None = None) -> bytes: ...

    async def read_stderr(self, *, timeout_s: float | None = None) -> bytes: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def write(self, data: bytes) -> None: ...

    async def resize(self, rows: int, cols: int) -> None: ...

    async def send_signal(self, signal: str) -> None: ...

    async def wait_exit(self, *, timeout_s: float | None = None) -> int: ...

    async def close(self) -> None: ...


@runtime_checkable
class SupportsSandboxPty(Protocol):
    async def create_pty(self, handle: SandboxHandle, spec: SandboxPtySpec) -> SandboxPtySession: ...


@runtime_checkable
class SupportsSandboxPtyAttach(Protocol):
    async def attach_pty(
        self, handle: SandboxHandle, session_id: str, *, takeover: bool = True, since: int | None = None
    ) -> SandboxPtySession: ...


@runtime_checkable
class ConnectableProvider(Protocol):
    """A provider whose sandboxes another process can reach from a descriptor."""

    async def serialize_handle(self, handle: SandboxHandle, *, scope: str | None = None) -> dict[str, Any]: ...

    async def connect(self, descriptor: Mapping[str, Any]) -> SandboxHandle: ...
