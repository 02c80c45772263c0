"""ng_run as a child process of a tool or a trainer: on a head port of its own, dying with its parent, stopped in
order when the caller is done (used by `gym eval run` and the Python API's Gym.start)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from ngym.config.errors import ConfigError
from ngym.lifetime import child_env
from ngym.servers.head import fetch_from_head

DEFAULT_READY_TIMEOUT_S = 600.0


def head_port_of(overrides: list[str]) -> int:
    """The head port an override sets, else a free one."""
    for token in overrides:
        if token.lstrip("+").startswith("head_server.port="):
            return int(token.split("=", 1)[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def ng_run_process(
    args: list[str], head_port: int, who: str, ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
) -> Iterator[subprocess.Popen[bytes]]:
    """ng_run with `args` (which must set `head_server.port=head_port`), ready; stopped with SIGINT on exit."""
    print(f"{who}: starting the servers (ng_run, head server port {head_port})", file=sys.stderr, flush=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "ngym.cli.run", *args],
        start_new_session=True,  # a Ctrl-C reaches the collection only; it stops in order, then stops ng_run
        env=child_env(),  # ng_run dies with this process, even by SIGKILL
    )
    try:
        _wait_ready(process, head_port, ready_timeout_s)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], head_port: int, timeout: float) -> None:
    """Until this ng_run is ready. A gym that answers on the port but is not this child (its head server names
    another pid) is never taken for it: this child then fails to bind the port and exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            other = _pid_on(head_port)
            held = f"; head port {head_port} is held by another gym (ng_run pid {other})" if other else ""
            raise ConfigError(f"ng_run stopped before its servers were ready (exit code {process.returncode}){held}")
        health = _health(head_port)
        if health.get("pid") == process.pid and health.get("ready"):
            return
        time.sleep(0.25)
    raise ConfigError(f"ng_run's servers were not ready within {timeout:g} s")


def _health(head_port: int) -> dict[str, Any]:
    with contextlib.suppress(ConfigError):
        health = fetch_from_head("127.0.0.1", head_port, "/health", timeout=2)
        if isinstance(health, dict):
            return health
    return {}


def _pid_on(head_port: int) -> int | None:
    """The pid of the ng_run whose head server answers on the port, if any does."""
    pid = _health(head_port).get("pid")
    return pid if isinstance(pid, int) else None
