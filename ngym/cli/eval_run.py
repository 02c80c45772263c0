"""`gym eval run` without --no-serve, as NeMo Gym defines it: start the servers, collect, stop them.

The configuration's overrides are split: the collection's own keys go to ng_collect_rollouts, the rest to
ng_run. ng_run runs as a child on a head port of its own (so a gym already running is never disturbed), dies
with this process, and is stopped in order once the collection ends, however it ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ngym.cli import collect
from ngym.cli.common import repo_root
from ngym.config.errors import ConfigError
from ngym.config.instances import iter_instances
from ngym.config.load import load_config
from ngym.servers.head import fetch_from_head

E2E_KEYS = frozenset({"split", "reuse_existing_data_preparation"})
ACCEPTED_KEYS = frozenset({"json", "disable_aggregation"})  # nothing in ngym for them to change
READY_TIMEOUT_S = 600.0


def override_key(token: str) -> str:
    return token.lstrip("+~").split("=", 1)[0].split(".", 1)[0]


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """(the collector's overrides, ng_run's, e2e settings such as `split`)."""
    collector_keys = set(collect.CollectArgs.model_fields) - {"head_server"}
    for_collector, for_servers, settings = [], [], {}
    for token in overrides:
        key = override_key(token)
        if key in E2E_KEYS:
            settings[key] = token.split("=", 1)[1] if "=" in token else ""
        elif key in collector_keys:
            for_collector.append(token)
        elif key not in ACCEPTED_KEYS:
            for_servers.append(token)
    return for_collector, for_servers, settings


def dataset_for(config: dict[str, Any], agent_name: str | None, split: str | None) -> tuple[str, str]:
    """(agent, input file) from the agents' `datasets` entries of type `split`, when --input is not given."""
    agents = {spec.name: spec.section for spec in iter_instances(config) if spec.server_type == "responses_api_agents"}
    if agent_name is not None and agent_name not in agents:
        raise ConfigError(f"--agent {agent_name}: no such agent in the configuration (agents: {', '.join(agents)})")
    candidates = [(name, d) for name, section in agents.items() if agent_name in (None, name)
                  for d in section.get("datasets") or [] if isinstance(d, dict)]  # fmt: skip
    listed = "; ".join(f"{name}: {d.get('type')} {d.get('jsonl_fpath')}" for name, d in candidates) or "none"
    if split is None:
        raise ConfigError(f"gym eval run needs --input FILE or --split TYPE (the agents' datasets: {listed})")
    chosen = [(name, d) for name, d in candidates if d.get("type") == split and d.get("jsonl_fpath")]
    if len(chosen) != 1:
        many = "several agents have one" if chosen else "no agent has one"
        raise ConfigError(f"--split {split}: {many}; pass --agent and --input (the agents' datasets: {listed})")
    name, dataset = chosen[0]
    path = Path(str(dataset["jsonl_fpath"]))
    if not (Path.cwd() / path).is_file() and not (repo_root() / path).is_file():
        raise ConfigError(
            f"--split {split}: dataset {dataset.get('name')} of {name} is {path}, which does not exist here; "
            "ngym does not download datasets: fetch it, or pass --input FILE"
        )
    return name, str(path)


def run_end_to_end(overrides: list[str]) -> int:
    for_collector, for_servers, settings = split_overrides(overrides)
    head_port = _head_port(for_servers)
    config = load_config(for_servers, repo_root()).values
    given = {override_key(token) for token in for_collector}
    if "input_jsonl_fpath" not in given:
        agent = next((t.split("=", 1)[1] for t in for_collector if override_key(t) == "agent_name"), None)
        agent, path = dataset_for(config, agent, settings.get("split"))
        for_collector += [f"++input_jsonl_fpath={path}"] + ([] if "agent_name" in given else [f"++agent_name={agent}"])
    with _ng_run([*for_servers, f"++head_server.port={head_port}"], head_port):
        return collect.run([*for_collector, f"+head_server.port={head_port}"])


def _head_port(for_servers: list[str]) -> int:
    for token in for_servers:
        if token.lstrip("+").startswith("head_server.port="):
            return int(token.split("=", 1)[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _ng_run(args: list[str], head_port: int) -> Iterator[None]:
    print(f"gym eval run: starting the servers (ng_run, head server port {head_port})", file=sys.stderr, flush=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "ngym.cli.run", *args],
        start_new_session=True,  # a Ctrl-C reaches the collection only; it stops in order, then stops ng_run
        preexec_fn=_die_with_parent,
    )
    try:
        _wait_ready(process, head_port)
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(process: subprocess.Popen[bytes], head_port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(f"ng_run stopped before its servers were ready (exit code {process.returncode})")
        with contextlib.suppress(ConfigError):
            if fetch_from_head("127.0.0.1", head_port, "/health", timeout=2).get("ready"):
                return
        time.sleep(0.25)
    raise ConfigError(f"ng_run's servers were not ready within {READY_TIMEOUT_S:g} s")


def _die_with_parent() -> None:
    """SIGTERM ng_run if this process dies, even by SIGKILL, so no gym is left running (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
