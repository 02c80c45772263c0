"""ng_run's engine: check the whole configuration, reserve ports, start every server, watch, stop."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ngym.config.errors import ConfigError
from ngym.config.instances import (
    HEAD_SERVER_KEY,
    RUN_DIR_KEY,
    InstanceSpec,
    check_references,
    find_instances,
    head_address,
    server_url,
)
from ngym.config.load import LoadedConfig
from ngym.config.secrets import redact_text, secret_values
from ngym.http.app import EmbeddedUvicorn, bind_socket, uvicorn_config
from ngym.servers.base import validate_server_config
from ngym.servers.head import HeadState, head_app
from ngym.servers.launch import PARENT_PID_ENV, load_server_class

STARTUP_TIMEOUT_KEY = "server_startup_timeout_s"
RAY_HEAD_KEY = "ray_head_node_address"  # NeMo Gym's
DEFAULT_STARTUP_TIMEOUT = 180.0
STOP_GRACE_SECONDS = 10.0
TAIL_LINES = 40
MAX_TAIL_LINE_CHARS = 4096  # of each line kept for the failure message; the whole line is printed
READ_CHUNK_BYTES = 65536
MAX_PENDING_BYTES = 1 << 20


@dataclass
class ChildServer:
    spec: InstanceSpec
    sock: socket.socket
    url: str
    startup_budget_s: float = 0.0  # beyond server_startup_timeout_s (Server.startup_budget_s)
    process: asyncio.subprocess.Process | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    pump: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return f"{self.spec.name} ({self.spec.server_type}/{self.spec.implementation})"

    def tail_text(self) -> str:
        return "\n".join(f"    | {line}" for line in self.tail) or "    | (no output)"


async def pump_lines(stream: asyncio.StreamReader, show: Callable[[bytes], None]) -> None:
    """Every line of `stream` until it ends, of any length (StreamReader.readline gives up past 64 KiB, and a
    child whose output is not read blocks on its next write). A line longer than MAX_PENDING_BYTES is shown in
    pieces of about that size."""
    pending = b""
    while chunk := await stream.read(READ_CHUNK_BYTES):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            show(line)
        while len(pending) >= MAX_PENDING_BYTES:
            show(pending[:MAX_PENDING_BYTES])
            pending = pending[MAX_PENDING_BYTES:]
    if pending:
        show(pending)


@dataclass
class RunPlan:
    config: dict[str, Any]
    children: list[ChildServer]
    head_sock: socket.socket
    root: Path

    def close_sockets(self) -> None:
        for child in self.children:
            child.sock.close()
        self.head_sock.close()


def plan_run(loaded: LoadedConfig) -> RunPlan:
    """Everything that can be checked before a process starts, then reserve every port."""
    config = copy.deepcopy(loaded.values)
    instances = find_instances(config, loaded.root, loaded.locations)
    if not instances:
        raise ConfigError(
            "the configuration defines no server instances. Pass config files, e.g. "
            '"+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml, '
            'resources_servers/simple_weather/configs/simple_weather.yaml]"'
        )
    check_references(instances, loaded.locations)
    if config.get(RAY_HEAD_KEY):
        raise ConfigError(
            f"{RAY_HEAD_KEY}{loaded.locations.describe(RAY_HEAD_KEY)}: ngym does not place servers on a Ray cluster "
            "yet; every server runs as a local process of ng_run. Remove the key to run locally."
        )
    problems = []
    budgets: dict[str, float] = {}
    for spec in instances.values():
        try:
            server_class = load_server_class(loaded.root, spec)
            budgets[spec.name] = server_class.startup_budget_s(validate_server_config(server_class.config_model, spec))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))

    # Where servers keep what a run leaves behind (local_vllm_model: vLLM's logs); `+run_dir=...` to choose.
    config.setdefault(
        RUN_DIR_KEY, str(loaded.root / ".ngym" / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    )
    head_host, head_port = head_address(config)
    head_sock = _bind(head_host, head_port, f"{HEAD_SERVER_KEY}.port", hint=f"+{HEAD_SERVER_KEY}.port=<free port>")
    config[HEAD_SERVER_KEY] = {**(config.get(HEAD_SERVER_KEY) or {}), "host": head_host, "port": head_port}
    children: list[ChildServer] = []
    try:
        for spec in instances.values():
            sock = _bind(spec.host, spec.port or 0, f"{spec.key_path}.port", hint="remove the port to get a free one")
            spec.section["host"] = spec.host
            spec.section["port"] = sock.getsockname()[1]
            children.append(ChildServer(spec, sock, server_url(spec.section), budgets.get(spec.name, 0.0)))
    except ConfigError:
        head_sock.close()
        for child in children:
            child.sock.close()
        raise
    return RunPlan(config, children, head_sock, loaded.root)


def _bind(host: str, port: int, key: str, hint: str) -> socket.socket:
    try:
        return bind_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot listen on {host}:{port}: {exc.strerror} ({hint})") from None


class Supervisor:
    def __init__(self, plan: RunPlan, out: Any = None) -> None:
        self.plan = plan
        self.out = out or sys.stdout
        self.stop_requested = asyncio.Event()
        self.head_state = HeadState()
        self._workdir = Path(tempfile.mkdtemp(prefix="ngym-run-"))
        self._config_file = self._workdir / "config.json"
        self._secrets = secret_values(plan.config)

    def _print(self, text: str) -> None:
        """Everything ng_run shows, its children's output included, goes through here: no secret gets out."""
        print(redact_text(text, self._secrets), file=self.out, flush=True)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_requested.set)
        self._config_file.write_bytes(orjson.dumps(self.plan.config))
        self._config_file.chmod(0o600)
        head = EmbeddedUvicorn(uvicorn_config(head_app(self.plan.config, self.head_state)))
        head.config.lifespan = "off"
        head_task = asyncio.create_task(head.serve(sockets=[self.plan.head_sock]))
        try:
            for child in self.plan.children:
                await self._spawn(child)
            failure = await self._wait_ready()
            if failure:
                self._print(failure)
                return 1
            self.head_state.ready = True
            self._print(self._table())
            return await self._watch()
        finally:
            await self._stop_all()
            head.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(head_task, 5)
            self.plan.close_sockets()
            shutil.rmtree(self._workdir, ignore_errors=True)

    async def _spawn(self, child: ChildServer) -> None:
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        fd = child.sock.fileno()
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ngym.servers.launch",
            "--instance", child.spec.name,
            "--config-file", str(self._config_file),
            "--root", str(self.plan.root),
            "--fd", str(fd),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            pass_fds=(fd,),
            start_new_session=True,  # Ctrl-C reaches ng_run only; it stops the children in order
            env=env,
        )  # fmt: skip
        child.pump = asyncio.create_task(self._pump_output(child))

    async def _pump_output(self, child: ChildServer) -> None:
        assert child.process is not None and child.process.stdout is not None

        def show(line: bytes) -> None:
            text = line.decode(errors="replace").rstrip()
            child.tail.append(text[:MAX_TAIL_LINE_CHARS])
            self._print(f"[{child.spec.name}] {text}")

        await pump_lines(child.process.stdout, show)

    async def _wait_ready(self) -> str | None:
        timeout = float(self.plan.config.get(STARTUP_TIMEOUT_KEY) or DEFAULT_STARTUP_TIMEOUT)
        started = time.monotonic()
        pending = list(self.plan.children)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while pending:
                if self.stop_requested.is_set():
                    return "ng_run: stopped before every server was ready"
                for child in list(pending):
                    assert child.process is not None
                    if child.process.returncode is not None:
                        await self._drain(child)
                        return (
                            f"ng_run: {child.label} failed to start (exit code {child.process.returncode}). "
                            f"Its last output:\n{child.tail_text()}"
                        )
                    if await _answers(session, child.url + "/health"):
                        pending.remove(child)
                late = [c for c in pending if time.monotonic() - started > timeout + c.startup_budget_s]
                if late:
                    names = ", ".join(child.label for child in late)
                    tails = "\n".join(f"  {c.label}:\n{c.tail_text()}" for c in late)
                    waited = max(timeout + c.startup_budget_s for c in late)
                    return f"ng_run: not ready after {waited:g} s ({STARTUP_TIMEOUT_KEY}): {names}\n{tails}"
                await asyncio.sleep(0.1)
        return None

    async def _watch(self) -> int:
        waits = {asyncio.create_task(c.process.wait()): c for c in self.plan.children if c.process is not None}
        stop = asyncio.create_task(self.stop_requested.wait())
        done, _ = await asyncio.wait([stop, *waits], return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, *waits):
            if task not in done:
                task.cancel()
        if stop in done:
            self._print("ng_run: stopping every server")
            return 0
        for task in done:
            child = waits[task]
            await self._drain(child)
            self._print(
                f"ng_run: {child.label} exited unexpectedly (exit code {task.result()}); stopping everything. "
                f"Its last output:\n{child.tail_text()}"
            )
        return 1

    async def _drain(self, child: ChildServer) -> None:
        if child.pump is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.pump), 2)

    async def _stop_all(self) -> None:
        running = [c for c in self.plan.children if c.process is not None and c.process.returncode is None]
        for child in running:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in running:
            assert child.process is not None
            try:
                await asyncio.wait_for(child.process.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                _signal_group(child, signal.SIGKILL)
                await child.process.wait()
        for child in self.plan.children:
            if child.pump is not None:
                child.pump.cancel()

    def _table(self) -> str:
        rows = [("instance", "type", "url", "pid")]
        head_host, head_port = head_address(self.plan.config)
        rows.append(("head_server", "head", f"http://{head_host}:{head_port}", str(os.getpid())))
        for child in self.plan.children:
            pid = str(child.process.pid) if child.process else "-"
            rows.append((child.spec.name, f"{child.spec.server_type}/{child.spec.implementation}", child.url, pid))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "ng_run: all servers are ready\n" + "\n".join(lines) + "\nng_run: Ctrl-C stops everything"


def _signal_group(child: ChildServer, sig: signal.Signals) -> None:
    assert child.process is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, sig)


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False
