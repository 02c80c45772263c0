"""After a collection, each agent's environment computes its metrics over the rollouts it scored, and they are
written beside the output as NeMo Gym writes them: `<output stem>_aggregate_metrics.json`.

For every agent with rows in the output, its resources server's `POST /aggregate_metrics` receives those rows
(without their `response`, `responses_create_params` and trajectories; `response.usage` and
`response.incomplete_details` are kept), ordered by task then repeat. The file is a JSON list, one entry per
agent: `agent_ref`, `agent_metrics`, `key_metrics`, `group_level_metrics`, `repeat_level_metrics` (and
`perf_summary` when the environment gives one). A resources server without the route (ngym's own servers
answer 404) has no entry; with no entry at all, no file is written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from ngym.config.errors import ConfigError
from ngym.config.instances import iter_instances
from ngym.http.client import HttpClient, Timeouts, UpstreamError
from ngym.rollouts.keys import AGENT_REF, ROLLOUT_INDEX, TASK_INDEX
from ngym.servers.head import fetch_from_head

ROUTE = "/aggregate_metrics"
AGENTS = "responses_api_agents"
HEAVY_FIELDS = frozenset({"response", "responses_create_params", "ng_agent_observations", "ng_model_call_capture",
                          "ng_trajectory"})  # fmt: skip
KEPT_RESPONSE_FIELDS = ("usage", "incomplete_details")
ENTRY_FIELDS: dict[str, type[dict[str, Any]] | type[list[Any]]] = {
    "agent_metrics": dict,
    "key_metrics": dict,
    "group_level_metrics": list,
    "repeat_level_metrics": list,
}
NOT_SERVED = frozenset({404, 405})


class AggregationError(RuntimeError):
    """An environment could not compute its metrics; the message names it and why."""


def aggregate_metrics_path(output: Path) -> Path:
    """`results/rollouts.jsonl` -> `results/rollouts_aggregate_metrics.json` (NeMo Gym's name)."""
    return output.with_name(output.stem + "_aggregate_metrics.json")


@dataclass(frozen=True)
class Environment:
    """The resources server an agent verifies with."""

    name: str
    url: str


def environments_of_agents(config: dict[str, Any], servers: Iterable[dict[str, Any]]) -> dict[str, Environment]:
    """Each agent's resources server (from the run's configuration and its `/servers` listing); agents with
    none are left out."""
    urls = {str(server["name"]): str(server["url"]) for server in servers if server.get("url")}
    found = {}
    for spec in iter_instances(config):
        reference = spec.section.get("resources_server")
        if spec.server_type != AGENTS or not isinstance(reference, dict):
            continue
        name = reference.get("name")
        if isinstance(name, str) and name in urls:
            found[spec.name] = Environment(name, urls[name])
    return found


def stripped(row: dict[str, Any]) -> dict[str, Any]:
    """A rollout as /aggregate_metrics receives it."""
    light = {key: value for key, value in row.items() if key not in HEAVY_FIELDS}
    response = row.get("response")
    if isinstance(response, dict):
        kept = {key: response[key] for key in KEPT_RESPONSE_FIELDS if response.get(key) is not None}
        if kept:
            light["response"] = kept
    return light


def rows_by_agent(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Stripped rows per agent (`agent_ref.name`), each agent's in task then repeat order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        agent = (row.get(AGENT_REF) or {}).get("name")
        if isinstance(agent, str):
            grouped.setdefault(agent, []).append(stripped(row))
    for agent_rows in grouped.values():
        agent_rows.sort(key=lambda row: (row.get(TASK_INDEX) or 0, row.get(ROLLOUT_INDEX) or 0))
    return grouped


def read_rows(output: Path) -> list[dict[str, Any]]:
    if not output.is_file():
        return []
    with output.open("rb") as lines:
        return [orjson.loads(line) for line in lines if line.strip()]


async def _entry(http: HttpClient, agent: str, environment: Environment, rows: list[dict[str, Any]]) -> Any:
    try:
        answer = await http.post_json(environment.url + ROUTE, {"verify_responses": rows})
    except UpstreamError as exc:
        raise AggregationError(f"{environment.name} (agent {agent}): {ROUTE}: {exc.reason}") from None
    if answer.status in NOT_SERVED:
        return None
    if not answer.ok:
        text = answer.body[:500].decode(errors="replace")
        raise AggregationError(f"{environment.name} (agent {agent}): {ROUTE} answered {answer.status}: {text}")
    try:
        metrics = answer.json()
    except orjson.JSONDecodeError:
        raise AggregationError(f"{environment.name} (agent {agent}): {ROUTE} answered invalid JSON") from None
    if not isinstance(metrics, dict):
        raise AggregationError(f"{environment.name} (agent {agent}): {ROUTE} answered {type(metrics).__name__}")
    entry: dict[str, Any] = {AGENT_REF: {"name": agent}}
    for field, kind in ENTRY_FIELDS.items():
        entry[field] = metrics.get(field) or kind()
    if metrics.get("perf_summary") is not None:
        entry["perf_summary"] = metrics["perf_summary"]
    return entry


async def aggregate(
    output: Path, environments: dict[str, Environment], timeout_s: float = 600.0
) -> tuple[Path | None, list[dict[str, Any]]]:
    """Ask each agent's environment for its metrics over the agent's rows in `output`; write the file when any
    environment answered. Returns the file (or None) and its entries."""
    path = aggregate_metrics_path(output)
    grouped = {agent: rows for agent, rows in rows_by_agent(read_rows(output)).items() if agent in environments}
    if not grouped:
        return None, []
    async with HttpClient(timeouts=Timeouts(total=timeout_s)) as http:
        answers = await asyncio.gather(
            *(_entry(http, agent, environments[agent], rows) for agent, rows in sorted(grouped.items()))
        )
    entries = [entry for entry in answers if entry is not None]
    if not entries:
        return None, []
    path.write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return path, entries


def aggregate_after_collection(output: Path, host: str, port: int, log: TextIO) -> bool:
    """ng_collect_rollouts' last step: the metrics of the environments of the running ng_run (head server at
    host:port) over `output`, their key metrics shown; False (and the reason on `log`) when one failed."""
    try:
        config = fetch_from_head(host, port, "/config")
        servers = fetch_from_head(host, port, "/servers")
        path, entries = asyncio.run(aggregate(output, environments_of_agents(config, servers)))
    except (AggregationError, ConfigError) as exc:
        print(f"ng_collect_rollouts: cannot compute the aggregate metrics: {exc}", file=log)
        return False
    for entry in entries:
        key_metrics = orjson.dumps(entry["key_metrics"], option=orjson.OPT_INDENT_2).decode()
        print(f"key metrics for {entry[AGENT_REF]['name']}:\n{key_metrics}")
    if path is not None:
        print(f"aggregate metrics: {path}")
    return True
