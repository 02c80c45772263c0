"""The `local` sandbox provider: a sandbox is a working directory on this machine and its commands are
subprocesses (`shell -c command`) run there. No isolation of any kind: the image, ports, time to live and resource
limits of a spec are ignored (said once per sandbox), and commands run with this process's rights.

A working directory the spec names is the caller's and stays; one the provider makes (under `workspace_root`, else
the system's temporary folder) is removed when the sandbox closes. A command that outlives its timeout, or whose
caller is cancelled, is killed with its whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

from .base import SandboxExecResult, SandboxHandle, SandboxSpec, SandboxStatus

LOGGER = logging.getLogger(__name__)
RUNTIME_FAILURE_CODE = 125  # the sandbox failed, not the command (NeMo Gym's sentinel)
REAP_TIMEOUT_S = 5.0


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # a session of its own: the group's id is its pid
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.wait(), timeout=REAP_TIMEOUT_S)


class LocalProvider:
    """Commands as host subprocesses, at most `concurrency` at a time per event loop."""

    name = "local"

    def __init__(
        self,
        workspace_root: str | None = None,
        shell: str = "/bin/bash",
        default_timeout_s: float = 180.0,
        concurrency: int = 8,
    ) -> None:
        self._root = Path(workspace_root).expanduser() if workspace_root else None
        self._shell = shell
        self._default_timeout_s = default_timeout_s
        self._concurrency = concurrency
        self._gate: asyncio.Semaphore | None = None

    def _slot(self) -> asyncio.Semaphore:
        if self._gate is None:
            self._gate = asyncio.Semaphore(self._concurrency)
        return self._gate

    async def create(self, spec: SandboxSpec) -> SandboxHandle:
        ignored = [name for name in ("image", "ttl_s", "ready_timeout_s", "ports") if getattr(spec, name)]
        if ignored:
            LOGGER.warning("the local sandbox provider ignores %s and every resource limit", ", ".join(ignored))
        sandbox_id = f"local-{uuid.uuid4().hex[:12]}"
        if spec.workdir:
            workspace, owned = Path(spec.workdir).expanduser(), False
        else:
            workspace, owned = (self._root or Path(tempfile.gettempdir())) / sandbox_id, True
        workspace.mkdir(parents=True, exist_ok=True)
        raw = {"workspace": workspace, "env": dict(spec.env), "owned": owned}
        return SandboxHandle(sandbox_id=sandbox_id, provider_name=self.name, raw=raw)

    async def exec(
        self,
        handle: SandboxHandle,
        command: str,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout_s: int | float | None = None,
        user: str | int | None = None,
    ) -> SandboxExecResult:
        if user is not None:
            raise ValueError("the local sandbox provider cannot run a command as another user")
        limit = timeout_s if timeout_s is not None else self._default_timeout_s
        async with self._slot():
            process = await asyncio.create_subprocess_exec(
                self._shell, "-c", command,
                cwd=str(cwd or handle.raw["workspace"]),
                env={**os.environ, **handle.raw["env"], **(env or {})},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
            try:
                stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=limit)
            except asyncio.CancelledError:
                await _kill_group(process)
                raise
            except TimeoutError:
                await _kill_group(process)
                return SandboxExecResult(
                    stdout=None,
                    stderr=f"local command timed out after {limit:g}s",
                    return_code=RUNTIME_FAILURE_CODE,
                    error_type="timeout",
                )
        assert process.returncode is not None
        return SandboxExecResult(
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace"),
            return_code=process.returncode,
        )

    @staticmethod
    def _inside(handle: SandboxHandle, path: str) -> Path:
        target = Path(path)
        return target if target.is_absolute() else handle.raw["workspace"] / target

    async def upload_file(self, handle: SandboxHandle, source_path: Path, target_path: str) -> None:
        target = self._inside(handle, target_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copy2, source_path, target)

    async def download_file(self, handle: SandboxHandle, source_path: str, target_path: Path) -> None:
        target_path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copy2, self._inside(handle, source_path), target_path)

    async def status(self, handle: SandboxHandle) -> SandboxStatus:
        return SandboxStatus.RUNNING if handle.raw["workspace"].is_dir() else SandboxStatus.STOPPED

    async def close(self, handle: SandboxHandle) -> None:
        if handle.raw["owned"]:
            await asyncio.to_thread(shutil.rmtree, handle.raw["workspace"], ignore_errors=True)

    async def aclose(self) -> None:
        return None
