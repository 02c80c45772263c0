"""Run one replica of a server instance as its own process: `python -m ngym.servers.launch --instance LABEL --fd N
--root DIR`, its ServerLaunch (JSON) on standard input (`--instance` only names the process for `ps`).

Whoever starts it (ng_run's local placement, or a Ray actor on another node) binds the listening socket and
passes its file descriptor, so the port is reserved before the child starts and two ng_runs can never race for
it. The launch comes on standard input rather than in a file: it holds the server's secrets.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from pydantic import ValidationError

from ngym.config.errors import ConfigError
from ngym.config.instances import InstanceSpec
from ngym.config.secrets import redact_text
from ngym.gc_tuning import tune_garbage_collector
from ngym.http.app import EmbeddedUvicorn, uvicorn_config
from ngym.lifetime import PARENT_PID_ENV, die_with_parent
from ngym.placement.spec import ServerLaunch
from ngym.servers.base import Server, StartupError


def load_server_class(root: Path, spec: InstanceSpec) -> type[Server[Any]]:
    """Import an instance's entrypoint (as package `<server type>.<implementation>.<module>` under the
    repository root) and return the one Server subclass it defines."""
    code_path = spec.code_path(root)
    if not code_path.is_file():
        raise ConfigError(f"{spec.key_path}.entrypoint: {code_path} does not exist")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module_name = ".".join((spec.server_type, spec.implementation, *Path(spec.entrypoint).with_suffix("").parts))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {code_path}: {exc}") from None
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Server) and obj.__module__ == module_name
    ]
    if len(found) != 1:
        names = ", ".join(cls.__name__ for cls in found) or "none"
        raise ConfigError(
            f"{code_path} must define exactly one server class (a subclass of ngym Server); found {names}"
        )
    return found[0]


async def _serve(server: Server[Any], sock: socket.socket) -> int:
    try:
        await server.open()
    except StartupError as exc:
        print(
            f"{server.context.instance_name}: cannot start: {server.context.redact(str(exc))}",
            file=sys.stderr,
            flush=True,
        )
        return 2
    tune_garbage_collector()
    try:
        config = uvicorn_config(server.app(manage_lifecycle=False), fd=sock.fileno())
        config.lifespan = "off"
        web = EmbeddedUvicorn(config)
        web.stop_on_signals()
        await web.serve(sockets=[sock])
    finally:
        await server.close()
    return 0


def _run_workers(count: int, build: Callable[[], Server[Any]], sock: socket.socket) -> int:
    """Fork `count` worker processes sharing the listening socket; each has its own event loop, HTTP client
    and server object. The first worker to fail takes the others down, so ng_run sees the failure."""
    supervisor = os.getpid()
    workers: set[int] = set()
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            die_with_parent(supervisor)
            os._exit(uvloop.run(_serve(build(), sock)))
        workers.add(pid)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while workers:
        pid, wait_status = os.wait()
        workers.discard(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if code != 0 and not stopping:
            status = code if code > 0 else 1
            stop(signal.SIGTERM, None)
    return status


def read_launch(data: bytes) -> ServerLaunch:
    """The launch from standard input; a clear error (without the values it holds) when it is not one."""
    try:
        return ServerLaunch.model_validate_json(data)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"the server launch on standard input is not valid ({where})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instance", help="the replica's label, for ps and tools that look for it")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--fd", required=True, type=int)
    args = parser.parse_args(argv)
    parent = os.environ.get(PARENT_PID_ENV)
    if parent:
        die_with_parent(int(parent))
    secrets: frozenset[str] = frozenset()
    who = "ngym.servers.launch"
    try:
        launch = read_launch(sys.stdin.buffer.read())
        secrets, who = launch.secrets(), launch.label
        server_class = load_server_class(args.root.resolve(), launch.spec)
        server = server_class.from_launch(launch)
    except ConfigError as exc:
        print(f"{who}: {redact_text(str(exc), secrets)}", file=sys.stderr, flush=True)
        return 2
    sock = socket.socket(fileno=args.fd)
    workers = server.config.num_workers
    if workers == 1:
        return uvloop.run(_serve(server, sock))
    return _run_workers(workers, lambda: server_class.from_launch(launch), sock)


if __name__ == "__main__":
    sys.exit(main())
