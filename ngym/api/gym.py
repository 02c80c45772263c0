"""The Python API for trainers: start a gym from a config (or connect to a running one), then collect rollouts
as an async iterator that yields each one as it ends.

    async with Gym.start({"policy_model": {...}, ...}) as gym:          # or config_paths=[...], overrides=[...]
        async for outcome in gym.collect(rows, num_repeats=8, responses_create_params={"temperature": 1.0}):
            if outcome.ok:
                train_on(outcome.row)                                      # NeMo Gym's row: reward, response, ...

Rows follow ng_collect_rollouts' rules exactly (NeMo Gym's `_ng_task_index` / `_ng_rollout_index`, `agent_ref`
or `agent_name`, per-agent repeats, seeds); ng_collect_rollouts is the same loop writing files. In flight is
bounded by `max_in_flight` and nothing else (no connection pool or actor cap below it); a rollout's slot is
held until its outcome is taken, so a trainer that consumes slowly holds back new rollouts.

`collect(..., progress=CollectProgress())` keeps that object up to date: `progress.snapshot()` at any time is
the snapshot ng_collect_rollouts writes to its progress file (`ngym.rollouts.progress`: counts, failures by
class, rates, mean reward, ETA), with `output` null; `write_progress_file(path, progress.snapshot())` writes one.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ngym.api.process import DEFAULT_READY_TIMEOUT_S, head_port_of, ng_run_process
from ngym.config.errors import ConfigError
from ngym.config.instances import DEFAULT_HOST, connect_host
from ngym.rollouts.engine import AgentUrls, Outcome, rollout_client, run_rollouts
from ngym.rollouts.progress import FAILED, FINISHED, STOPPED, CollectProgress
from ngym.rollouts.tasks import TaskSource, check_run, iter_tasks
from ngym.servers.head import agents_of, fetch_from_head

__all__ = ["CollectProgress", "Gym", "Outcome"]


class Gym:
    """A running gym, seen from Python: its agents by name (each with every replica's URL), and `collect`."""

    def __init__(self, agent_urls: AgentUrls, head_port: int | None = None) -> None:
        if not agent_urls:
            raise ConfigError("the gym runs no agent (responses_api_agents instance) to collect rollouts with")
        self.agent_urls = dict(agent_urls)
        self.head_port = head_port  # where ng_run's head server answers (ng_collect_rollouts +head_server.port)

    @classmethod
    def connect(cls, head_port: int = 11000, host: str = DEFAULT_HOST) -> Gym:
        """The gym an ng_run already serves (its head server at host:head_port)."""
        return cls(agents_of(fetch_from_head(connect_host(host), head_port, "/servers")), head_port)

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        config: Mapping[str, Any] | None = None,
        *,
        config_paths: Sequence[str | Path] = (),
        overrides: Sequence[str] = (),
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
    ) -> AsyncIterator[Gym]:
        """Start ng_run for `config` (a dict in the shape of the YAML files) and/or `config_paths`, with Hydra
        `overrides`, on a head port of its own; stopped, with every server, when the block ends (and killed
        with this process if it dies)."""
        with tempfile.TemporaryDirectory(prefix="ngym-api-") as folder:
            paths = [str(p) for p in config_paths]
            if config is not None:
                written = Path(folder) / "config.yaml"
                written.write_text(yaml.safe_dump(dict(config), sort_keys=False))
                paths.append(str(written))
            if not paths:
                raise ConfigError("Gym.start needs a config dict or config_paths")
            head_port = head_port_of(list(overrides))
            args = [f"+config_paths=[{', '.join(paths)}]", *overrides, f"++head_server.port={head_port}"]
            running = ng_run_process(args, "ngym.api", ready_timeout_s)
            await asyncio.to_thread(running.__enter__)
            try:
                yield await asyncio.to_thread(cls.connect, head_port)
            finally:
                await asyncio.to_thread(running.__exit__, None, None, None)

    async def collect(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        agent_name: str | None = None,
        num_repeats: int | Mapping[str, int] = 1,
        num_repeats_add_seed: bool = False,
        responses_create_params: Mapping[str, Any] | None = None,
        limit: int | None = None,
        max_in_flight: int = 256,
        max_attempts: int = 3,
        rollout_timeout_s: float = 3600.0,
        stop: asyncio.Event | None = None,
        progress: CollectProgress | None = None,
    ) -> AsyncIterator[Outcome]:
        """Each rollout's Outcome as it ends (`.row` scored, or `.failure` with its class), in the order they
        end. Every row is checked before the first rollout starts (a ConfigError names `rows:N`). Setting
        `stop`, or leaving the loop, cancels the rollouts in flight. `progress`, when given, counts the run as
        its outcomes are yielded (an outcome is counted before the loop's body sees it) and ends "finished",
        "stopped" (`stop`, or the loop left and the iterator closed) or "failed" (an error)."""
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be at least 1, got {max_in_flight}")
        source = TaskSource(
            None,
            limit=limit,
            agent_name=agent_name,
            num_repeats=num_repeats,
            add_seed=num_repeats_add_seed,
            params_override=dict(responses_create_params) if responses_create_params else None,
            rows=rows,
        )
        check = check_run(source, self.agent_urls, set())
        http = rollout_client(rollout_timeout_s, max_attempts)
        stop = stop or asyncio.Event()
        progress = progress or CollectProgress()
        progress.begin(check.rollouts)
        state = FAILED
        async with http:
            tasks = progress.count_started(iter_tasks(source))
            outcomes = run_rollouts(http, self.agent_urls, tasks, max_in_flight, stop)
            try:
                async for outcome in outcomes:
                    progress.ended(outcome)
                    yield outcome
                state = STOPPED if stop.is_set() else FINISHED
            except (GeneratorExit, asyncio.CancelledError):
                state = STOPPED
                raise
            finally:
                progress.end(state)
                await outcomes.aclose()
