"""One replica of a server instance on a Ray node (RayActor placement), and the run's registry of replica ports.

The actor binds a port on its node's address and runs the server as a child process (`python -m
ngym.servers.launch`, exactly as ng_run runs it locally), then reports the server's real URL. Every request goes
to that URL over HTTP, never through Ray: the actor's Ray methods are a few control calls, so Ray's cap on an
actor's concurrent calls never caps rollouts. When the server dies the actor exits, and Ray restarts it
(`max_restarts`) on the same port when it can, so the URL other servers know stays right.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Any

import ray

from ngym.config.instances import server_url
from ngym.config.secrets import redact_text
from ngym.http.app import bind_socket
from ngym.lifetime import PARENT_PID_ENV
from ngym.placement.spec import ServerLaunch

TAIL_LINES = 40
STOP_GRACE_SECONDS = 10.0
REGISTRY_NAME = "ngym-replica-ports"  # one per run: ng_run joins the cluster in a namespace of its own


class ReplicaStartError(Exception):
    """The replica could not start; the message says why, with the server's last output."""


class ReplicaRegistry:
    """The port of each replica, so that a replica Ray restarts listens where it did."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}

    def port_of(self, label: str) -> int | None:
        return self.ports.get(label)

    def record(self, label: str, port: int) -> None:
        self.ports[label] = port


class ServerReplica:
    def __init__(self, launch_json: str, root: str, startup_timeout_s: float) -> None:
        # Plain arguments only: Ray keeps them inline, so a restart never depends on the object store.
        launch = ServerLaunch.model_validate_json(launch_json)
        self.label = launch.label
        self.secrets = launch.secrets()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.stopping = False
        self.ready = False
        self.failure: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        context = ray.get_runtime_context()
        host = ray.util.get_node_ip_address()
        self.node = f"{host}/{context.get_node_id()[:8]}"
        self.url = ""
        try:
            registry = ray.get_actor(REGISTRY_NAME)
            previous: Any = ray.get(registry.port_of.remote(self.label))
            sock = self._bind(host, previous, launch)
            port = sock.getsockname()[1]
            self.url = server_url({"host": host, "port": port})
            section = {**launch.section, "host": host, "port": port}
            self._start(launch.model_copy(update={"section": section}), root, sock)
            self._wait_healthy(startup_timeout_s)
            self.ready = True
            if self.process is not None and self.process.poll() is not None:
                raise ReplicaStartError(f"{self.label} exited as it became ready:\n{self._tail_text()}")
            ray.get(registry.record.remote(self.label, port))
        except ReplicaStartError as exc:
            # Reported by info() rather than raised: ng_run shows it as one message and stops the run.
            self.failure = self._redact(str(exc))
            self._stop_child()

    def __repr__(self) -> str:
        # Ray prefixes this actor's output lines with it.
        return self.label

    def info(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "pid": self.process.pid if self.process else None,
            "node": self.node,
            "failure": self.failure,
        }

    def stop(self) -> int | None:
        """Stop the server (SIGTERM, then SIGKILL after a grace period); the actor is killed next."""
        self.stopping = True
        return self._stop_child()

    def _bind(self, host: str, previous: int | None, launch: ServerLaunch) -> socket.socket:
        if previous:
            with contextlib.suppress(OSError):
                return bind_socket(host, previous)
        port = launch.spec.port or 0
        try:
            return bind_socket(host, port)
        except OSError as exc:
            raise ReplicaStartError(
                f"{launch.spec.key_path}.port: cannot listen on {host}:{port} on node {self.node}: {exc.strerror}"
            ) from None

    def _start(self, launch: ServerLaunch, root: str, sock: socket.socket) -> None:
        """Start the server from a thread that outlives it: Linux signals a child when the thread that started it
        ends (PR_SET_PDEATHSIG), and Ray's threads come and go."""
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                self.process = self._spawn(launch, root, sock)
            except BaseException as exc:  # shown by the constructor
                errors.append(exc)
                return
            finally:
                sock.close()  # the server holds it now
                started.set()
            threading.Thread(target=self._pump, daemon=True).start()
            code = self.process.wait()
            if self.ready and not self.stopping and self.failure is None:
                self._say(f"exited unexpectedly (exit code {code}); Ray restarts this replica")
                os._exit(1)

        threading.Thread(target=run, daemon=True, name=f"ngym-{self.label}").start()
        started.wait()
        if errors:
            raise ReplicaStartError(f"{self.label}: cannot start the server process: {errors[0]}")

    def _spawn(self, launch: ServerLaunch, root: str, sock: socket.socket) -> subprocess.Popen[bytes]:
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        fd = sock.fileno()
        process = subprocess.Popen(
            [sys.executable, "-m", "ngym.servers.launch", "--instance", self.label, "--root", root, "--fd", str(fd)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(fd,), start_new_session=True, env=env, cwd=root,
        )  # fmt: skip
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a child that died at once: its exit code tells why
            process.stdin.write(launch.model_dump_json().encode())
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        return process

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = self._redact(raw.decode(errors="replace").rstrip())
            self.tail.append(line[:4096])
            print(line, flush=True)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while True:
            code = self.process.poll()
            if code is not None:
                time.sleep(0.5)  # the last lines of its output
                raise ReplicaStartError(
                    f"{self.label} failed to start on node {self.node} (exit code {code}). Its last output:\n"
                    f"{self._tail_text()}"
                )
            if _answers(self.url + "/health"):
                return
            if time.monotonic() > deadline:
                raise ReplicaStartError(
                    f"{self.label} on node {self.node} was not ready after {timeout:g} s "
                    f"(server_startup_timeout_s). Its last output:\n{self._tail_text()}"
                )
            time.sleep(0.1)

    def _stop_child(self) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def _tail_text(self) -> str:
        return "\n".join(f"    | {line}" for line in self.tail) or "    | (no output)"

    def _redact(self, text: str) -> str:
        return redact_text(text, self.secrets)

    def _say(self, message: str) -> None:
        print(self._redact(f"ngym: {self.label} {message}. Its last output:\n{self._tail_text()}"), flush=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False
