"""LocalProcess placement: each replica is a child process of ng_run on this host (ng_run's default).

ng_run binds every replica's socket while it plans (a port in use is a configuration error before anything
starts) and passes it to the child with the replica's launch on its standard input. The socket stays ng_run's:
a replica that dies is restarted on it (ngym.placement.restarts), so its URL never changes; meanwhile it refuses
connections when another replica of its instance serves (ngym.placement.listening), so callers go there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ngym.config.errors import ConfigError
from ngym.config.instances import InstanceSpec, server_url
from ngym.lifetime import PARENT_PID_ENV
from ngym.nemo_gym_envs.requirements import RequirementsError
from ngym.nemo_gym_envs.venvs import InstallError, environment_python
from ngym.placement.base import DOWN, STARTING, UP, Placement, ReplicaInfo, Show
from ngym.placement.directory import DirectoryEntry
from ngym.placement.listening import bind_kept, steer
from ngym.placement.restarts import RestartBudget, RestartPolicy, describe_exit
from ngym.placement.spec import PlannedInstance, ServerLaunch

STOP_GRACE_SECONDS = 10.0
TAIL_LINES = 40
LAST_OUTPUT_LINES = 10  # of a restarted replica's previous process, for /servers and ng_status
MAX_TAIL_LINE_CHARS = 4096  # of each line kept for the failure message; the whole line is printed
READ_CHUNK_BYTES = 65536
MAX_PENDING_BYTES = 1 << 20
STARTUP_TIMEOUT_KEY = "server_startup_timeout_s"


@dataclass
class ChildServer:
    """One replica: its socket (bound while planning), then its process."""

    instance: PlannedInstance
    replica: int
    sock: socket.socket
    url: str
    process: asyncio.subprocess.Process | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    pump: asyncio.Task[None] | None = None
    launch: ServerLaunch | None = None  # what it was started with: a restart is started with the same
    python: Path | None = None
    state: str = STARTING  # UP once it answers /health; DOWN from its death to its restart, then STARTING
    budget: RestartBudget = field(default_factory=lambda: RestartBudget(RestartPolicy()))
    last_exit: str | None = None  # how its last process ended (describe_exit), once it has been restarted
    last_output: tuple[str, ...] = ()  # the last lines that process printed
    respawn: asyncio.Task[None] | None = None  # a restart being started: close() waits for it, then stops it

    @property
    def spec(self) -> InstanceSpec:
        return self.instance.spec

    @property
    def name(self) -> str:
        return self.instance.label(self.replica)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.instance.kind})"

    @property
    def startup_budget_s(self) -> float:
        return self.instance.startup_budget_s

    @property
    def restarts(self) -> int:
        return self.budget.restarts

    def tail_text(self) -> str:
        return tail_text(self.tail)


def tail_text(lines: deque[str] | list[str]) -> str:
    return "\n".join(f"    | {line}" for line in lines) or "    | (no output)"


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


def bind_port(host: str, port: int, key: str, hint: str) -> socket.socket:
    try:
        return bind_kept(host, port)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot listen on {host}:{port}: {exc.strerror} ({hint})") from None


class LocalProcesses(Placement):
    def __init__(self, root: Path, show: Show | None = None) -> None:
        self.root = root
        if show is not None:
            self.show = show
        self.children: list[ChildServer] = []
        self.startup_timeout = 0.0

    def reserve(self, instances: list[PlannedInstance]) -> None:
        """Bind every replica's port (the instance's `port` for a single replica, else a free one) and write the
        first replica's address into each section, as the head server's /config shows it."""
        try:
            for instance in instances:
                spec, port = instance.spec, instance.spec.port
                if port and instance.num_replicas > 1:
                    raise ConfigError(
                        f"{spec.key_path}.port: {instance.num_replicas} replicas cannot share port {port} "
                        "(remove the port: each replica gets a free one)"
                    )
                for replica in range(instance.num_replicas):
                    key = f"{spec.key_path}.port"
                    sock = bind_port(spec.host, port or 0, key, hint="remove the port to get a free one")
                    url = server_url({"host": spec.host, "port": sock.getsockname()[1]})
                    policy = RestartPolicy.for_instance(instance.max_restarts, instance.restart_refill_s)
                    self.children.append(ChildServer(instance, replica, sock, url, budget=RestartBudget(policy)))
                    if replica == 0:
                        spec.section["host"] = spec.host
                        spec.section["port"] = sock.getsockname()[1]
        except ConfigError:
            self.close_sockets()
            raise

    def close_sockets(self) -> None:
        for child in self.children:
            child.sock.close()

    def directory(self) -> dict[str, DirectoryEntry]:
        entries: dict[str, DirectoryEntry] = {}
        for child in self.children:
            spec = child.instance.spec
            known = entries.get(spec.name)
            urls = (*known.urls, child.url) if known else (child.url,)
            entries[spec.name] = DirectoryEntry(
                server_type=spec.server_type, implementation=spec.implementation, urls=urls
            )
        return entries

    async def start(
        self, config: dict[str, Any], instances: list[PlannedInstance], timeout: float, stop: asyncio.Event
    ) -> str | None:
        directory = self.directory()
        self.startup_timeout = timeout
        try:
            pythons = await self._environment_pythons(instances)
        except (InstallError, RequirementsError) as exc:
            return f"ng_run: {exc}"
        for child in self.children:
            section = {**child.spec.section, "host": child.spec.host, "port": child.sock.getsockname()[1]}
            launch = child.instance.launch(config, directory, child.replica).model_copy(update={"section": section})
            await self._spawn(child, launch, pythons.get(child.spec.name))
        return await self._wait_ready(timeout, stop)

    async def _environment_pythons(self, instances: list[PlannedInstance]) -> dict[str, Path]:
        """Each NeMo Gym environment's venv, installed (with its progress shown) before any server starts."""
        pythons = {}
        for instance in instances:
            if instance.nemo_gym is not None:
                folder, name = instance.nemo_gym.folder, instance.nemo_gym.name
                pythons[instance.name] = await asyncio.to_thread(environment_python, folder, name, self.show)
        return pythons

    async def _spawn(self, child: ChildServer, launch: ServerLaunch, python: Path | None = None) -> None:
        child.launch, child.python = launch, python
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        fd = child.sock.fileno()
        environment = child.instance.nemo_gym
        if environment is not None and python is not None:
            command = [str(python), "-m", "ngym.nemo_gym_envs.serve", "--tree", str(environment.tree),
                       "--folder", str(environment.folder), "--entrypoint", environment.entrypoint]  # fmt: skip
        else:
            command = [sys.executable, "-m", "ngym.servers.launch", "--root", str(self.root)]
        child.process = await asyncio.create_subprocess_exec(
            *command, "--instance", child.name, "--fd", str(fd),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.PIPE,
            pass_fds=(fd,),
            start_new_session=True,  # Ctrl-C reaches ng_run only; it stops the children in order
            env=env,
        )  # fmt: skip
        assert child.process.stdin is not None
        child.process.stdin.write(launch.model_dump_json().encode())
        with contextlib.suppress(ConnectionError):  # a child that died at once: its exit code tells why
            await child.process.stdin.drain()
        child.process.stdin.close()
        child.pump = asyncio.create_task(self._pump_output(child))

    async def _pump_output(self, child: ChildServer) -> None:
        assert child.process is not None and child.process.stdout is not None

        def show(line: bytes) -> None:
            text = line.decode(errors="replace").rstrip()
            child.tail.append(text[:MAX_TAIL_LINE_CHARS])
            self.show(f"[{child.name}] {text}")

        await pump_lines(child.process.stdout, show)

    async def _wait_ready(self, timeout: float, stop: asyncio.Event) -> str | None:
        started = time.monotonic()
        pending = list(self.children)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while pending:
                if stop.is_set():
                    return "ng_run: stopped before every server was ready"
                for child in list(pending):
                    assert child.process is not None
                    if child.process.returncode is not None:
                        await self._drain(child)
                        return (
                            f"ng_run: {child.label} failed to start (exit code {child.process.returncode}). "
                            f"Its last output:\n{child.tail_text()}"
                        )
                    if await answers(session, child.url + "/health"):
                        pending.remove(child)
                        self._came_up(child)
                late = [c for c in pending if time.monotonic() - started > timeout + c.startup_budget_s]
                if late:
                    names = ", ".join(child.label for child in late)
                    tails = "\n".join(f"  {c.label}:\n{c.tail_text()}" for c in late)
                    waited = max(timeout + c.startup_budget_s for c in late)
                    return f"ng_run: not ready after {waited:g} s ({STARTUP_TIMEOUT_KEY}): {names}\n{tails}"
                await asyncio.sleep(0.1)
        return None

    async def watch(self, stop: asyncio.Event) -> str | None:
        """Restart each replica that dies, within its budget; the first one past it stops everything."""
        keepers = [asyncio.create_task(self._keep_alive(c, stop)) for c in self.children if c.process is not None]
        stopped = asyncio.create_task(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait([stopped, *keepers], return_when=asyncio.FIRST_COMPLETED)
                if stopped in done:
                    return None
                failures = [str(task.result()) for task in done if task.result()]
                if failures:
                    return "\n".join(failures)
                keepers = [task for task in keepers if task not in done]
                if not keepers:
                    return None
        finally:
            for task in (stopped, *keepers):
                task.cancel()

    async def _keep_alive(self, child: ChildServer, stop: asyncio.Event) -> str | None:
        """Until `stop` (None) or `child` dies past its max_restarts (why, with its last output)."""
        budget = child.budget
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if stop.is_set():
                return None
            _signal_group(child, signal.SIGKILL)  # what its group left (workers) must not serve on its socket
            self._went_down(child)
            await self._drain(child)
            how = describe_exit(code)
            delay = budget.died()
            if delay is None:
                return (
                    f"ng_run: {child.label} exited unexpectedly ({how}) after {budget.spent} of "
                    f"{budget.policy.budget()} restarts (max_restarts); stopping everything. "
                    f"Its last output:\n{child.tail_text()}"
                )
            child.last_exit, child.last_output = how, tuple(child.tail)[-LAST_OUTPUT_LINES:]
            self.show(
                f"ng_run: {child.label} exited unexpectedly ({how}); restarting it on {child.url} in {delay:g} s "
                f"(restart {budget.shown()}). Its last output:\n{child.tail_text()}"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return None
            assert child.launch is not None
            child.tail.clear()
            child.state = STARTING
            # Shielded: a stop that comes meanwhile must not lose a process just started (close() awaits it).
            child.respawn = asyncio.create_task(self._spawn(child, child.launch, child.python))
            await asyncio.shield(child.respawn)
            failure = await self._wait_back(child, stop)
            if failure or stop.is_set():
                return failure
            if child.process.returncode is None:
                self._came_up(child)
                self.show(
                    f"ng_run: {child.label} restarted at {child.url} (pid {child.process.pid}, "
                    f"restart {budget.shown()}, after {how})"
                )

    def _came_up(self, child: ChildServer) -> None:
        child.state = UP
        child.budget.up()
        self._steer(child.instance)

    def _went_down(self, child: ChildServer) -> None:
        child.state = DOWN
        self._steer(child.instance)

    def _steer(self, instance: PlannedInstance) -> None:
        steer([(child.state, child.sock) for child in self.children if child.instance is instance])

    async def _wait_back(self, child: ChildServer, stop: asyncio.Event) -> str | None:
        """Wait until a restarted replica answers /health, exits (its keeper sees it) or `stop`; why not, when
        it does none of these within its startup time."""
        assert child.process is not None
        deadline = time.monotonic() + self.startup_timeout + child.startup_budget_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while not stop.is_set() and child.process.returncode is None:
                if await answers(session, child.url + "/health"):
                    return None
                if time.monotonic() > deadline:
                    return (
                        f"ng_run: {child.label} was restarted but did not answer within "
                        f"{self.startup_timeout + child.startup_budget_s:g} s ({STARTUP_TIMEOUT_KEY}); stopping "
                        f"everything. Its last output:\n{child.tail_text()}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
        return None

    async def _drain(self, child: ChildServer) -> None:
        if child.pump is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.pump), 2)

    async def close(self) -> None:
        respawns = [c.respawn for c in self.children if c.respawn is not None]
        await asyncio.gather(*respawns, return_exceptions=True)
        running = [c for c in self.children if c.process is not None and c.process.returncode is None]
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
        for child in self.children:
            if child.pump is not None:
                child.pump.cancel()
        self.close_sockets()

    def replicas(self) -> list[ReplicaInfo]:
        return [
            ReplicaInfo(
                instance=child.spec.name,
                replica=child.replica,
                label=child.name,
                kind=child.instance.kind,
                url=child.url,
                pid=child.process.pid if child.process else None,
                state=child.state,
                restarts=child.restarts,
                last_exit=child.last_exit,
                last_output=child.last_output,
            )
            for child in self.children
        ]


def _signal_group(child: ChildServer, sig: signal.Signals) -> None:
    assert child.process is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, sig)


async def answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as resp:
            return resp.status == 200
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False
