"""RayActor placement: with `ray_head_node_address` set, ng_run joins that Ray cluster and runs each replica of
each instance as a Ray actor on its nodes (ngym.placement.replica_actor), spread across nodes unless the
instance's `resources` say where.

Imported only when the key is set: a local run never imports Ray. ng_run must run on a node of the cluster (as
NeMo Gym's does), and every node needs this checkout at the same path. Instances start after the instances they
refer to, so that each replica is handed the real addresses of the servers it calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ngym.config.errors import ConfigError
from ngym.config.instances import find_references
from ngym.placement.base import Placement, ReplicaInfo
from ngym.placement.directory import DirectoryEntry
from ngym.placement.spec import PlannedInstance

NODE_IP_KEY = "ray_node_ip_address"  # ngym's: this machine's address in the cluster (default: Ray's choice)
DEFAULT_MAX_RESTARTS = 3
# The actor's Ray methods are control calls (info, stop); requests go to its HTTP server, never through Ray.
CONTROL_CONCURRENCY = 4
WATCH_INTERVAL_S = 1.0
INFO_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 20.0
CONNECT_CHECK_TIMEOUT_S = 5.0


@dataclass
class RayReplica:
    instance: PlannedInstance
    replica: int
    handle: Any
    url: str | None = None
    pid: int | None = None
    node: str | None = None
    state: str = "starting"  # starting, up, restarting, dead
    restarts: int = 0  # times ng_run saw Ray bring it back

    @property
    def label(self) -> str:
        return self.instance.label(self.replica)


@dataclass
class RayActors(Placement):
    address: str
    node_ip: str | None
    waves: list[list[PlannedInstance]]
    root: Path
    replicas_: list[RayReplica] = field(default_factory=list)
    registry: Any = None
    connected: bool = False

    @classmethod
    def plan(
        cls, address: str, where: str, config: dict[str, Any], instances: list[PlannedInstance], root: Path
    ) -> RayActors:
        """Check the cluster keys and the order instances start in, before anything starts."""
        host = _check_address(address, where)
        _check_sections(instances)
        node_ip = config.get(NODE_IP_KEY)
        if node_ip is None and host is not None and _is_loopback(host):
            node_ip = "127.0.0.1"  # a cluster on this machine's loopback: join it there
        if node_ip is not None:
            try:
                ipaddress.ip_address(str(node_ip))
            except ValueError:
                raise ConfigError(f"{NODE_IP_KEY}: {node_ip!r} is not an IP address") from None
        return cls(address, str(node_ip) if node_ip else None, start_order(instances), root)

    # -- starting -------------------------------------------------------------------------------------------
    async def start(
        self, config: dict[str, Any], instances: list[PlannedInstance], timeout: float, stop: asyncio.Event
    ) -> str | None:
        try:
            self._connect()
        except ConfigError as exc:
            return f"ng_run: {exc}"
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # ray.init may have taken them
            loop.add_signal_handler(sig, stop.set)
        problem = self._check_fits(instances)
        if problem:
            return problem
        import ray

        from ngym.placement.replica_actor import REGISTRY_NAME, ReplicaRegistry, ServerReplica

        self.registry = ray.remote(ReplicaRegistry).options(num_cpus=0, name=REGISTRY_NAME).remote()
        actor_class = ray.remote(ServerReplica)
        directory: dict[str, DirectoryEntry] = {}
        for wave in self.waves:
            started: list[RayReplica] = []
            for instance in wave:
                for replica in range(instance.num_replicas):
                    launch = instance.launch(config, directory, replica)
                    budget = timeout + instance.startup_budget_s
                    handle = actor_class.options(**self._options(instance, replica)).remote(
                        launch.model_dump_json(), str(self.root), budget
                    )
                    started.append(RayReplica(instance, replica, handle))
            self.replicas_.extend(started)
            failure = await self._wait_started(started, timeout, stop)
            if failure:
                return failure
            for instance in wave:
                urls = tuple(r.url for r in started if r.instance is instance and r.url)
                spec = instance.spec
                directory[spec.name] = DirectoryEntry(
                    server_type=spec.server_type, implementation=spec.implementation, urls=urls
                )
        return None

    def _connect(self) -> None:
        if self.node_ip == "127.0.0.1":
            # Ray replaces a loopback address with this machine's external one unless told it runs on one host.
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every replica's lines, not "[repeated 2x]"
        _check_reachable(self.address)
        import ray

        options: dict[str, Any] = {"address": self.address, "namespace": f"ngym-{os.getpid()}", "log_to_driver": True}
        if self.node_ip and self.node_ip != "127.0.0.1":
            options["_node_ip_address"] = self.node_ip
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {self.address} (ray_head_node_address): {exc}") from None
        self.connected = True

    def _options(self, instance: PlannedInstance, replica: int) -> dict[str, Any]:
        options: dict[str, Any] = {
            "name": instance.label(replica) if instance.num_replicas > 1 else instance.name,
            "num_cpus": instance.num_cpus if instance.num_cpus is not None else instance.num_workers,
            "num_gpus": instance.num_gpus or 0,
            "resources": dict(instance.resources or {}),
            "max_restarts": instance.max_restarts if instance.max_restarts is not None else DEFAULT_MAX_RESTARTS,
            "max_concurrency": CONTROL_CONCURRENCY,
            "scheduling_strategy": "SPREAD",
        }
        return options

    def _check_fits(self, instances: list[PlannedInstance]) -> str | None:
        """A replica no node of the cluster can hold would wait forever: say which key asks too much."""
        import ray

        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        problems = []
        for instance in instances:
            wanted = self._wanted(instance)
            if any(all(node.get(name, 0) >= amount for name, amount in wanted.items()) for node in nodes):
                continue
            asks = ", ".join(f"{name}={amount:g}" for name, amount in wanted.items())
            has = "; ".join(
                ", ".join(f"{k}={v:g}" for k, v in sorted(node.items()) if not k.startswith("node:")) for node in nodes
            )
            problems.append(
                f"ng_run: no node of the Ray cluster can hold a replica of {instance.spec.key_path} "
                f"(num_cpus, num_gpus, resources ask for {asks}; the nodes have: {has or 'none'})"
            )
        return "\n".join(problems) or None

    @staticmethod
    def _wanted(instance: PlannedInstance) -> dict[str, float]:
        wanted = {"CPU": float(instance.num_cpus if instance.num_cpus is not None else instance.num_workers)}
        if instance.num_gpus:
            wanted["GPU"] = float(instance.num_gpus)
        wanted.update({name: float(amount) for name, amount in (instance.resources or {}).items()})
        return {name: amount for name, amount in wanted.items() if amount > 0}

    async def _wait_started(self, started: list[RayReplica], timeout: float, stop: asyncio.Event) -> str | None:
        budget = timeout + max(r.instance.startup_budget_s for r in started) + INFO_TIMEOUT_S
        infos: dict[asyncio.Future[Any], RayReplica] = {asyncio.ensure_future(self._info(r)): r for r in started}
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        pending = set(infos)
        try:
            deadline = time.monotonic() + budget
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    late = ", ".join(infos[task].label for task in pending)
                    return (
                        f"ng_run: not placed and ready on the Ray cluster after {budget:g} s "
                        f"(server_startup_timeout_s): {late}"
                    )
                done, _ = await asyncio.wait([*pending, stopped], timeout=left, return_when="FIRST_COMPLETED")
                if stopped in done:
                    return "ng_run: stopped before every server was ready"
                for task in done:
                    pending.discard(task)
                    failure = task.result()
                    if failure:
                        return str(failure)
            return None
        finally:
            stopped.cancel()
            for task in pending:
                task.cancel()

    async def _info(self, replica: RayReplica) -> str | None:
        """Wait for the replica's constructor, then record where it listens; why it failed, if it did."""
        import ray

        try:
            info = await replica.handle.info.remote()
        except ray.exceptions.RayActorError as exc:
            replica.state = "dead"
            return f"ng_run: {replica.label} ({replica.instance.kind}) failed to start on the Ray cluster: {exc}"
        if info.get("failure"):
            replica.state = "dead"
            return f"ng_run: {info['failure']}"
        replica.url, replica.pid, replica.node, replica.state = info["url"], info["pid"], info["node"], "up"
        return None

    # -- watching -------------------------------------------------------------------------------------------
    async def watch(self, stop: asyncio.Event) -> str | None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
            if stop.is_set():
                return None
            await asyncio.gather(*(self._refresh(r) for r in self.replicas_))
            for instance in {id(r.instance): r.instance for r in self.replicas_}.values():
                mine = [r for r in self.replicas_ if r.instance is instance]
                if all(r.state == "dead" for r in mine):
                    return (
                        f"ng_run: every replica of {instance.name} ({instance.kind}) has died and Ray restarts "
                        "them no more (max_restarts); stopping everything"
                    )
        return None

    async def _refresh(self, replica: RayReplica) -> None:
        import ray

        if replica.state == "dead":
            return
        try:
            info = await asyncio.wait_for(replica.handle.info.remote(), INFO_TIMEOUT_S)
        except (ray.exceptions.ActorUnavailableError, TimeoutError):
            if replica.state != "restarting":
                replica.state = "restarting"
                self.show(f"ng_run: {replica.label} is down; Ray restarts it")
            return
        except ray.exceptions.RayActorError:
            replica.state = "dead"
            self.show(f"ng_run: {replica.label} has died and Ray restarts it no more (max_restarts)")
            return
        if info.get("failure"):
            replica.state = "dead"
            self.show(f"ng_run: {replica.label} could not restart: {info['failure']}")
            return
        moved = (info["url"], info["pid"]) != (replica.url, replica.pid)
        if moved and replica.state == "up":  # restarted between two looks: the restart is still reported
            self.show(f"ng_run: {replica.label} was down (pid {replica.pid}); Ray restarted it")
        replica.url, replica.pid, replica.node = info["url"], info["pid"], info["node"]
        if replica.state != "up" or moved:
            replica.state = "up"
            replica.restarts += 1
            self.show(f"ng_run: {replica.label} is up again at {replica.url} (pid {replica.pid}, node {replica.node})")

    # -- stopping -------------------------------------------------------------------------------------------
    async def close(self) -> None:
        if not self.connected:
            return
        import ray

        stops = [r.handle.stop.remote() for r in self.replicas_ if r.state != "dead"]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), STOP_TIMEOUT_S)
        for handle in [r.handle for r in self.replicas_] + ([self.registry] if self.registry is not None else []):
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
        ray.shutdown()
        self.connected = False

    def replicas(self) -> list[ReplicaInfo]:
        return [
            ReplicaInfo(
                instance=r.instance.name,
                replica=r.replica,
                label=r.label,
                kind=r.instance.kind,
                url=r.url,
                pid=r.pid,
                node=r.node,
                restarts=r.restarts,
            )
            for r in self.replicas_
        ]


def start_order(instances: list[PlannedInstance]) -> list[list[PlannedInstance]]:
    """Instances in waves: each after every instance it refers to. A cycle cannot start (each replica must be
    handed the addresses of the servers it calls) and is a configuration error naming the instances."""
    by_name = {instance.name: instance for instance in instances}
    needs = {
        instance.name: {ref.name for _, ref in find_references(instance.spec.section, "") if ref.name in by_name}
        for instance in instances
    }
    waves: list[list[PlannedInstance]] = []
    placed: set[str] = set()
    while len(placed) < len(instances):
        ready = [i for i in instances if i.name not in placed and needs[i.name] <= placed]
        if not ready:
            stuck = ", ".join(sorted(name for name in needs if name not in placed))
            raise ConfigError(
                f"ray_head_node_address: these instances refer to each other in a cycle ({stuck}); on a Ray "
                "cluster each server starts after the servers it refers to"
            )
        waves.append(ready)
        placed.update(i.name for i in ready)
    return waves


def _check_sections(instances: list[PlannedInstance]) -> None:
    problems = []
    for instance in instances:
        spec = instance.spec
        if spec.section.get("host"):
            problems.append(
                f"{spec.key_path}.host: on a Ray cluster each replica listens on its node's address; remove the host"
            )
        if spec.port and instance.num_replicas > 1:
            problems.append(
                f"{spec.key_path}.port: {instance.num_replicas} replicas cannot share port {spec.port} "
                "(two may land on one node; remove the port: each replica gets a free one)"
            )
        if instance.restart_refill_s is not None:
            problems.append(
                f"{spec.key_path}.restart_refill_s: local processes only (Ray counts max_restarts over a replica's "
                "whole run); remove it"
            )
    if problems:
        raise ConfigError("\n".join(problems))


def _check_address(address: str, where: str) -> str | None:
    """The host of `host:port`, or None for "auto" (Ray finds the cluster this machine belongs to)."""
    if address == "auto":
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected host:port of the Ray cluster's head node (or auto), got {address!r}")
    return host.strip("[]")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable cluster for minutes; a refused connection is said at once."""
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_CHECK_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} (ray_head_node_address): {reason}. "
            "Is its head node started (ray start --head)?"
        ) from None
