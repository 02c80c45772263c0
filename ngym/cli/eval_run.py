"""`gym eval run` without --no-serve, as NeMo Gym defines it: start the servers, collect, stop them.

The configuration's overrides are split: the collection's own keys go to ng_collect_rollouts, the rest to
ng_run. ng_run runs as a child on a head port of its own (so a gym already running is never disturbed), dies
with this process, and is stopped in order once the collection ends, however it ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ngym.api.process import head_port_of, ng_run_process
from ngym.cli import collect
from ngym.cli.common import repo_root
from ngym.config.errors import ConfigError
from ngym.config.instances import iter_instances
from ngym.config.load import load_config, parse_overrides, value_text
from ngym.rollouts.output_lock import OutputLock

E2E_KEYS = frozenset({"split", "reuse_existing_data_preparation"})
ACCEPTED_KEYS = frozenset({"json"})  # nothing in ngym for it to change


def override_key(token: str) -> str:
    return token.lstrip("+~").split("=", 1)[0].split(".", 1)[0]


def override_value(token: str) -> str:
    """The value an override sets, as text (a flag's value may come quoted: `++split='a b'`)."""
    (override,) = parse_overrides([token])
    value = override.value()
    return value if isinstance(value, str) else str(value)


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """(the collector's overrides, ng_run's, e2e settings such as `split`)."""
    collector_keys = set(collect.CollectArgs.model_fields) - {"head_server"}
    for_collector, for_servers, settings = [], [], {}
    for token in overrides:
        key = override_key(token)
        if key in E2E_KEYS:
            settings[key] = override_value(token) if "=" in token else ""
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
    head_port = head_port_of(for_servers)
    config = load_config(for_servers, repo_root()).values
    given = {override_key(token) for token in for_collector}
    if "input_jsonl_fpath" not in given:
        agent = next((override_value(t) for t in for_collector if override_key(t) == "agent_name"), None)
        agent, path = dataset_for(config, agent, settings.get("split"))
        for_collector += [f"++input_jsonl_fpath={value_text(path)}"]
        for_collector += [] if "agent_name" in given else [f"++agent_name={value_text(agent)}"]
    parsed = collect.parse_args([*for_collector, f"+head_server.port={head_port}"])
    output = collect.build_plan(parsed, {}).output_path  # the input checked, and the output locked, first
    with (
        OutputLock.acquire(output, "gym eval run") as lock,
        ng_run_process([*for_servers, f"++head_server.port={head_port}"], "gym eval run"),
    ):
        return collect.run_locked(parsed, lock)
