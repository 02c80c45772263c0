"""ng_run's engine: check the whole configuration, reserve what can be reserved, start every server through its
placement (local processes, or actors on a Ray cluster), publish where they listen, watch, stop."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib.util
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ngym.config.errors import ConfigError
from ngym.config.instances import HEAD_SERVER_KEY, RUN_DIR_KEY, check_references, find_instances, head_address
from ngym.config.load import LoadedConfig
from ngym.config.secrets import redact_text, secret_values
from ngym.http.app import EmbeddedUvicorn, uvicorn_config
from ngym.http.hosts import ALLOWED_HOSTS_KEY, hosts_setting
from ngym.nemo_gym_envs.detect import is_nemo_gym_server, nemo_gym_server
from ngym.nemo_gym_envs.requirements import RequirementsError, parse_requirements
from ngym.placement.base import Placement, ReplicaInfo
from ngym.placement.local import (
    MAX_PENDING_BYTES,
    READ_CHUNK_BYTES,
    STARTUP_TIMEOUT_KEY,
    ChildServer,
    LocalProcesses,
    bind_port,
    pump_lines,
)
from ngym.placement.spec import PlannedInstance, check_local
from ngym.servers.base import validate_server_config
from ngym.servers.head import HeadState, head_app
from ngym.servers.launch import load_server_class

__all__ = ["MAX_PENDING_BYTES", "READ_CHUNK_BYTES", "RunPlan", "Supervisor", "plan_run", "pump_lines"]

RAY_HEAD_KEY = "ray_head_node_address"  # NeMo Gym's
DEFAULT_STARTUP_TIMEOUT = 180.0


@dataclass
class RunPlan:
    config: dict[str, Any]
    instances: list[PlannedInstance]
    placement: Placement
    head_sock: socket.socket
    root: Path

    @property
    def children(self) -> list[ChildServer]:
        """The local processes' replicas, their ports bound (none on a Ray cluster)."""
        return self.placement.children if isinstance(self.placement, LocalProcesses) else []

    def close_sockets(self) -> None:
        if isinstance(self.placement, LocalProcesses):
            self.placement.close_sockets()
        self.head_sock.close()


def plan_run(loaded: LoadedConfig) -> RunPlan:
    """Everything that can be checked before a server starts, then reserve the ports that can be."""
    config = copy.deepcopy(loaded.values)
    instances = find_instances(config, loaded.root, loaded.locations, is_nemo_gym_server)
    if not instances:
        raise ConfigError(
            "the configuration defines no server instances. Pass config files, e.g. "
            '"+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml, '
            'resources_servers/simple_weather/configs/simple_weather.yaml]"'
        )
    check_references(instances, loaded.locations)
    hosts_setting(config.get(ALLOWED_HOSTS_KEY), f"{ALLOWED_HOSTS_KEY}{loaded.locations.describe(ALLOWED_HOSTS_KEY)}")
    problems = []
    planned: list[PlannedInstance] = []
    for spec in instances.values():
        environment = nemo_gym_server(spec, loaded.root, loaded.locations)
        if environment is not None:  # an environment or agent: its code runs only in its own process, on its venv
            try:  # a requirement from outside the registry is a configuration error: nothing starts
                parse_requirements(environment.folder / "requirements.txt").check_registry_only(environment.name)
            except RequirementsError as exc:
                problems.append(str(exc))
            planned.append(PlannedInstance(spec, nemo_gym=environment))
            continue
        try:
            server_class = load_server_class(loaded.root, spec)
            server_config = validate_server_config(server_class.config_model, spec)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        planned.append(
            PlannedInstance(
                spec,
                num_replicas=server_config.num_replicas,
                startup_budget_s=server_class.startup_budget_s(server_config),
                num_workers=server_config.num_workers,
                num_cpus=server_config.num_cpus,
                num_gpus=server_config.num_gpus,
                resources=server_config.resources,
                max_restarts=server_config.max_restarts,
                restart_refill_s=server_config.restart_refill_s,
            )
        )
    if problems:
        raise ConfigError("\n".join(problems))

    placement = _placement(config, planned, loaded)
    # Where servers keep what a run leaves behind (local_vllm_model: vLLM's logs); `+run_dir=...` to choose.
    config.setdefault(
        RUN_DIR_KEY, str(loaded.root / ".ngym" / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    )
    head_host, head_port = head_address(config)
    head_sock = bind_port(head_host, head_port, f"{HEAD_SERVER_KEY}.port", hint=f"+{HEAD_SERVER_KEY}.port=<free port>")
    config[HEAD_SERVER_KEY] = {**(config.get(HEAD_SERVER_KEY) or {}), "host": head_host, "port": head_port}
    if isinstance(placement, LocalProcesses):
        try:
            placement.reserve(planned)
        except ConfigError:
            head_sock.close()
            raise
    return RunPlan(config, planned, placement, head_sock, loaded.root)


def _placement(config: dict[str, Any], planned: list[PlannedInstance], loaded: LoadedConfig) -> Placement:
    address = config.get(RAY_HEAD_KEY)
    if not address:
        check_local(planned, RAY_HEAD_KEY)
        return LocalProcesses(loaded.root)
    where = f"{RAY_HEAD_KEY}{loaded.locations.describe(RAY_HEAD_KEY)}"
    environments = [instance.spec.key_path for instance in planned if instance.nemo_gym is not None]
    if environments:
        raise ConfigError(
            f"{where}: NeMo Gym's servers (environments and agents) run as local processes only for now: "
            f"{', '.join(environments)}"
        )
    # Imported only here (it imports Ray only once it joins the cluster): without the key, ng_run never does.
    from ngym.placement.ray_actors import RayActors

    placement = RayActors.plan(str(address), where, config, planned, loaded.root)
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            f"{where}: servers on a Ray cluster need Ray in ng_run's environment: pip install 'ngym[ray]' "
            "(make setup installs it), or remove the key to run every server locally"
        )
    return placement


class Supervisor:
    def __init__(self, plan: RunPlan, out: Any = None) -> None:
        self.plan = plan
        self.out = out or sys.stdout
        self.stop_requested = asyncio.Event()
        self.head_state = HeadState(replicas=plan.placement.replicas)
        self._secrets = secret_values(plan.config)
        plan.placement.show = self._print

    def _print(self, text: str) -> None:
        """Everything ng_run shows, its servers' output included, goes through here: no secret gets out."""
        print(redact_text(text, self._secrets), file=self.out, flush=True)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_requested.set)
        head = EmbeddedUvicorn(uvicorn_config(head_app(self.plan.config, self.head_state)))
        head.config.lifespan = "off"
        head_task = asyncio.create_task(head.serve(sockets=[self.plan.head_sock]))
        placement = self.plan.placement
        try:
            timeout = float(self.plan.config.get(STARTUP_TIMEOUT_KEY) or DEFAULT_STARTUP_TIMEOUT)
            failure = await placement.start(self.plan.config, self.plan.instances, timeout, self.stop_requested)
            if failure:
                self._print(failure)
                return 1
            self.head_state.ready = True
            self._print(self._table())
            failure = await placement.watch(self.stop_requested)
            if failure is None:
                self._print("ng_run: stopping every server")
                return 0
            self._print(failure)
            return 1
        finally:
            await placement.close()
            head.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(head_task, 5)
            self.plan.close_sockets()

    def _table(self) -> str:
        replicas = self.plan.placement.replicas()
        on_nodes = any(replica.node for replica in replicas)
        head_host, head_port = head_address(self.plan.config)
        rows = [("instance", "type", "url", *(("node",) if on_nodes else ()), "pid")]
        rows.append(("head_server", "head", f"http://{head_host}:{head_port}", *(("-",) if on_nodes else ()),
                     str(os.getpid())))  # fmt: skip
        rows.extend(_row(replica, on_nodes) for replica in replicas)
        columns = len(rows[0])
        widths = [max(len(row[i]) for row in rows) for i in range(columns)]
        lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "ng_run: all servers are ready\n" + "\n".join(lines) + "\nng_run: Ctrl-C stops everything"


def _row(replica: ReplicaInfo, on_nodes: bool) -> tuple[str, ...]:
    pid = str(replica.pid) if replica.pid is not None else "-"
    node = ((replica.node or "-"),) if on_nodes else ()
    return (replica.label, replica.kind, replica.url or "-", *node, pid)
