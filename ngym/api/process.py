"""ng_run as a child process, the one way every tool starts it: `gym eval run`, the Python API's Gym.start,
`make demo`, the tests and the benchmarks. On a head port of its own (a free one unless given), dying with its
parent (even by SIGKILL), ready when its own head server says so (a gym of someone else's on the port is never
taken for it), stopped with Ctrl-C as a user would and killed if it does not stop."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ngym.config.errors import ConfigError
from ngym.lifetime import child_env
from ngym.servers.head import fetch_from_head
from ngym.vllm.process import free_port

DEFAULT_READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
LOG_TAIL_CHARS = 3000


def head_port_of(overrides: Sequence[str]) -> int:
    """The head port an override sets, else a free one."""
    for token in overrides:
        if token.lstrip("+").startswith("head_server.port="):
            return int(token.split("=", 1)[1])
    return free_port()


class NgRun:
    """`ng_run` with `args` (Hydra overrides; `+head_server.port` is added unless they set it).

    `cwd`: where it runs (its relative config paths are from there); `log_path`: its output goes there (else this
    process's); `own_session`: a terminal's Ctrl-C reaches the caller only, which then stops ng_run in order."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        log_path: Path | None = None,
        own_session: bool = False,
        who: str | None = None,
    ) -> None:
        self.head_port = head_port_of(args)
        sets_port = any(token.lstrip("+").startswith("head_server.port=") for token in args)
        self.args = [*args] if sets_port else [*args, f"++head_server.port={self.head_port}"]
        self.cwd = cwd
        self.log_path = log_path
        self.own_session = own_session
        self.who = who
        self.process: subprocess.Popen[bytes] | None = None

    # --- life ---------------------------------------------------------------------------------------------

    def start(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> NgRun:
        """Start it and wait until its servers are ready; ConfigError (with its last output) when it stops first
        or is not ready in time, and then nothing of it is left running."""
        if self.who:
            print(f"{self.who}: starting the servers (ng_run, head server port {self.head_port})", file=sys.stderr,
                  flush=True)  # fmt: skip
        output = self.log_path.open("wb") if self.log_path else None
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ngym.cli.run", *self.args],
                cwd=self.cwd,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=self.own_session,
                env=child_env(),
            )
        finally:
            if output:
                output.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        process = self.process
        assert process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                other = self._health().get("pid")
                held = f"; head port {self.head_port} is held by another gym (ng_run pid {other})" if other else ""
                raise ConfigError(
                    f"ng_run exited with code {process.returncode} before its servers were ready{held}"
                    + self.log_tail()
                )
            health = self._health()
            if health.get("pid") == process.pid and health.get("ready"):
                return
            time.sleep(0.25)
        raise ConfigError(f"ng_run's servers were not ready within {timeout:g} s" + self.log_tail())

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Ctrl-C, as a user would, then SIGKILL after `timeout`; ng_run's exit code (None if never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> NgRun:
        # `with gym.start(timeout=...):` must not start a second ng_run.
        return self if self.process is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- what it serves -----------------------------------------------------------------------------------

    def _health(self) -> dict[str, Any]:
        with contextlib.suppress(ConfigError):
            health = fetch_from_head("127.0.0.1", self.head_port, "/health", timeout=2)
            if isinstance(health, dict):
                return health
        return {}

    def servers(self) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = fetch_from_head("127.0.0.1", self.head_port, "/servers", timeout=5)
        return servers

    def replicas(self) -> dict[str, dict[str, Any]]:
        """Every replica of the run by label (`simple_weather#1`), as `/servers` lists it: url, pid, state, restarts."""
        return {replica["label"]: replica for server in self.servers() for replica in server.get("replicas") or []}

    def url_of(self, name: str) -> str:
        return next(str(server["url"]) for server in self.servers() if server["name"] == name)

    def log_tail(self) -> str:
        """The end of its output (with log_path), for an error message."""
        if self.log_path and self.log_path.is_file():
            return ":\n" + self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        return ""


@contextlib.contextmanager
def ng_run_process(args: list[str], who: str, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> Iterator[NgRun]:
    """ng_run for a tool: in a session of its own (a Ctrl-C stops the tool's work first, which then stops ng_run),
    ready on entry, stopped on exit."""
    with NgRun(args, own_session=True, who=who).start(ready_timeout_s) as running:
        yield running
