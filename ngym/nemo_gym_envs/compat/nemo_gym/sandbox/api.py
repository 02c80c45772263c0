"""The sandbox a server uses, whatever provider runs it: `AsyncSandbox(provider_or_config, spec)`, then `start()`,
`exec(command)`, `upload`/`download`, `status()`, `stop()` (or `async with`); `Sandbox` is the same for synchronous
callers (its own event loop on a thread). A spec's `files` are placed in the sandbox when it starts, and a failure
there stops it. Optional capabilities (service endpoints, pause/resume, terminals, serialize/connect) work where the
provider offers them and otherwise raise an error naming the provider.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .providers import (
    ConnectableProvider,
    SandboxEndpoint,
    SandboxExecResult,
    SandboxHandle,
    SandboxProvider,
    SandboxPtySession,
    SandboxPtySpec,
    SandboxSpec,
    SandboxStatus,
    SupportsSandboxBackgroundServices,
    SupportsSandboxEndpoint,
    SupportsSandboxPauseResume,
    SupportsSandboxPty,
    SupportsSandboxPtyAttach,
    create_provider,
)

T = TypeVar("T")
SYNC_OPERATION_TIMEOUT_S = 3600.0


def _name(provider: Any) -> str:
    return str(getattr(provider, "name", type(provider).__name__))


class SandboxPty:
    """Terminal sessions (`sandbox.pty.create()`, `.attach()`, `.exec()`), where the provider offers them."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    def _provider(self, capability: type, what: str) -> Any:
        provider = self._sandbox._provider
        if not isinstance(provider, capability):
            raise NotImplementedError(f"Sandbox provider {_name(provider)!r} does not support {what}; use exec()")
        return provider

    async def create(self, command: str | None = None, *, cwd: str | None = None, env: dict[str, str] | None = None,
                     rows: int = 24, cols: int = 80, user: str | int | None = None,
                     pty: bool = True) -> SandboxPtySession:  # fmt: skip
        provider = self._provider(SupportsSandboxPty, "PTY sessions")
        workdir = cwd if cwd is not None else self._sandbox._spec.workdir if self._sandbox._spec else None
        spec = SandboxPtySpec(command=command, cwd=workdir, env=env, rows=rows, cols=cols, user=user, pty=pty)
        session: SandboxPtySession = await provider.create_pty(self._sandbox._require_handle(), spec)
        return session

    async def attach(self, session_id: str, *, takeover: bool = True, since: int | None = None) -> SandboxPtySession:
        provider = self._provider(SupportsSandboxPtyAttach, "re-attaching PTY sessions")
        session: SandboxPtySession = await provider.attach_pty(
            self._sandbox._require_handle(), session_id, takeover=takeover, since=since
        )
        return session

    async def exec(self, command: str, *, timeout_s: int | float | None = 180, pty: bool = True,
                   **options: Any) -> SandboxExecResult:  # fmt: skip
        """Run one command in a session of its own and collect its output (a timeout is a result, not an error)."""
        session = await self.create(command, pty=pty, **options)

        async def drain(read: Callable[[], Awaitable[bytes]]) -> bytes:
            chunks = bytearray()
            while chunk := await read():
                chunks.extend(chunk)
            return bytes(chunks)

        try:
            stdout, stderr, code = await asyncio.wait_for(
                asyncio.gather(drain(session.read), drain(session.read_stderr), session.wait_exit()), timeout_s
            )
        except TimeoutError:
            return SandboxExecResult(None, f"PTY command timed out after {timeout_s}s: {command!r}", 125, "timeout")
        finally:
            await session.close()
        return SandboxExecResult(
            stdout.decode(errors="replace"), None if pty else stderr.decode(errors="replace"), code
        )


class AsyncSandbox:
    """One sandbox on a provider (given, or made from a `{name: settings}` config, which this sandbox then owns)."""

    def __init__(self, provider: Mapping[str, Any] | SandboxProvider, spec: SandboxSpec | None = None, *,
                 owns_provider: bool = True) -> None:  # fmt: skip
        self._provider: Any = create_provider(provider) if isinstance(provider, Mapping) else provider
        self._owns_provider = owns_provider
        self._spec = spec
        self._handle: SandboxHandle | None = None
        self._stopped = True
        self._closed = False
        self._connected = False
        self.pty = SandboxPty(self)

    def _require_handle(self) -> SandboxHandle:
        if self._handle is None or self._stopped:
            raise RuntimeError("Sandbox has not been started")
        return self._handle

    async def start(self, spec: SandboxSpec | None = None) -> AsyncSandbox:
        if self._closed:
            raise RuntimeError("Sandbox has been stopped")
        if self._handle is not None and not self._stopped:
            raise RuntimeError("Sandbox is already started")
        wanted = spec if spec is not None else self._spec
        if wanted is None:
            raise ValueError("Sandbox.start() requires a SandboxSpec")
        self._handle = await self._provider.create(wanted)
        self._spec, self._stopped = wanted, False
        try:
            if wanted.files:
                with tempfile.TemporaryDirectory(prefix="ngym-sandbox-upload-") as scratch:
                    for index, (target, contents) in enumerate(wanted.files.items()):
                        source = Path(scratch) / f"file-{index}"
                        source.write_text(contents, encoding="utf-8")
                        await self._provider.upload_file(self._handle, source, target)
        except BaseException:
            await self.stop()
            raise
        return self

    async def start_with_setup(self, spec: SandboxSpec | None,
                               setup: Callable[[AsyncSandbox], Awaitable[None]]) -> AsyncSandbox:  # fmt: skip
        """Start, then run `setup`; a failing setup stops the sandbox."""
        await self.start(spec)
        try:
            await setup(self)
        except BaseException:
            await self.stop()
            raise
        return self

    def _workdir(self, cwd: str | None) -> str | None:
        return cwd if cwd is not None else self._spec.workdir if self._spec is not None else None

    async def exec(self, command: str, *, cwd: str | None = None, env: dict[str, str] | None = None,
                   timeout_s: int | float | None = 180, user: str | int | None = None,
                   preserve_background_services: bool = False) -> SandboxExecResult:  # fmt: skip
        handle = self._require_handle()
        if preserve_background_services and isinstance(self._provider, SupportsSandboxBackgroundServices):
            if env is not None or user is not None:
                raise ValueError("Service-preserving execution does not support per-command env or user overrides")
            return await self._provider.exec_with_background_services(
                handle, command, cwd=self._workdir(cwd), timeout_s=timeout_s
            )
        result: SandboxExecResult = await self._provider.exec(
            handle, command, cwd=self._workdir(cwd), env=env, timeout_s=timeout_s, user=user
        )
        return result

    async def upload(self, local_path: Path | str, remote_path: str) -> None:
        await self._provider.upload_file(self._require_handle(), Path(local_path), remote_path)

    async def download(self, remote_path: str, local_path: Path | str) -> None:
        await self._provider.download_file(self._require_handle(), remote_path, Path(local_path))

    async def status(self) -> SandboxStatus:
        if self._handle is None:
            return SandboxStatus.UNKNOWN
        if self._stopped:
            return SandboxStatus.STOPPED
        status: SandboxStatus = await self._provider.status(self._handle)
        return status

    async def endpoint(self, port: int) -> SandboxEndpoint:
        """The URL of a service port the spec declared."""
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"Sandbox endpoint port must be an integer between 1 and 65535, got {port!r}")
        declared = tuple(self._spec.ports) if self._spec is not None else ()
        if port not in declared:
            raise ValueError(
                f"Sandbox port {port} was not declared in SandboxSpec.ports; declared ports: {list(declared)!r}"
            )
        if not isinstance(self._provider, SupportsSandboxEndpoint):
            raise NotImplementedError(f"Sandbox provider {_name(self._provider)!r} does not support service endpoints")
        return await self._provider.endpoint(self._require_handle(), port)

    def _pausable(self) -> Any:
        if not isinstance(self._provider, SupportsSandboxPauseResume):
            raise NotImplementedError(f"Sandbox provider {_name(self._provider)!r} does not support pause/resume")
        return self._provider

    async def pause(self) -> None:
        await self._pausable().pause(self._require_handle())

    async def resume(self) -> None:
        await self._pausable().resume(self._require_handle())

    async def stop(self) -> None:
        """End the sandbox (a failed stop can be retried) and, when this sandbox owns it, close its provider."""
        if self._closed:
            return
        if self._handle is not None and not self._stopped:
            await self._provider.close(self._handle)
            self._stopped = True
        if self._owns_provider:
            await self._provider.aclose()
        self._closed = True

    async def disconnect(self) -> None:
        """Let go of a sandbox rebuilt with `connect()` without stopping it (its owner stops it)."""
        if self._closed:
            return
        if not self._connected:
            raise RuntimeError("disconnect() is valid only for a sandbox rebuilt with connect()")
        if self._owns_provider:
            await self._provider.aclose()
        self._handle, self._stopped, self._closed = None, True, True

    def _connectable(self, provider: Any) -> Any:
        if not isinstance(provider, ConnectableProvider):
            raise RuntimeError(f"provider {_name(provider)!r} does not support serialize()/connect()")
        return provider

    async def serialize(self, *, scope: str | None = None) -> dict[str, Any]:
        """A descriptor another process can rebuild this sandbox from (`connect`)."""
        descriptor = await self._connectable(self._provider).serialize_handle(self._require_handle(), scope=scope)
        if isinstance(descriptor, dict) and self._spec is not None:
            if descriptor.get("workdir") is None:
                descriptor = {**descriptor, "workdir": self._spec.workdir}
            if self._spec.ports:
                descriptor = {**descriptor, "ports": list(self._spec.ports)}
        return dict(descriptor)

    @classmethod
    async def connect(cls, descriptor: Mapping[str, Any] | Any, *, provider: SandboxProvider,
                      owns_provider: bool = True) -> AsyncSandbox:  # fmt: skip
        connectable = cls._connectable(cls, provider)  # type: ignore[arg-type]
        if not isinstance(descriptor, Mapping) and hasattr(descriptor, "to_dict"):
            descriptor = descriptor.to_dict()
        handle = await connectable.connect(descriptor)
        workdir = descriptor.get("workdir") if isinstance(descriptor, Mapping) else None
        ports = descriptor.get("ports", ()) if isinstance(descriptor, Mapping) else ()
        sandbox = cls(provider, SandboxSpec(workdir=workdir, ports=ports), owns_provider=owns_provider)
        sandbox._handle, sandbox._stopped, sandbox._connected = handle, False, True
        return sandbox

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        await self.stop()


class Sandbox:
    """`AsyncSandbox` for synchronous code (never from inside a running event loop)."""

    def __init__(self, provider: Mapping[str, Any] | SandboxProvider, spec: SandboxSpec | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ngym-sandbox-loop", daemon=True)
        self._thread.start()
        self._closed = False
        self._async = AsyncSandbox(provider, spec)

    def _run(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("Sandbox is blocking; use AsyncSandbox in async code instead")

        async def call() -> T:
            return await operation()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=SYNC_OPERATION_TIMEOUT_S)

    def start(self, spec: SandboxSpec | None = None) -> Sandbox:
        self._run(lambda: self._async.start(spec))
        return self

    def exec(self, command: str, **options: Any) -> SandboxExecResult:
        return self._run(lambda: self._async.exec(command, **options))

    def upload(self, local_path: Path | str, remote_path: str) -> None:
        self._run(lambda: self._async.upload(local_path, remote_path))

    def download(self, remote_path: str, local_path: Path | str) -> None:
        self._run(lambda: self._async.download(remote_path, local_path))

    def status(self) -> SandboxStatus:
        return SandboxStatus.STOPPED if self._closed else self._run(self._async.status)

    def endpoint(self, port: int) -> SandboxEndpoint:
        return self._run(lambda: self._async.endpoint(port))

    def pause(self) -> None:
        self._run(self._async.pause)

    def resume(self) -> None:
        self._run(self._async.resume)

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._async.stop)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()
