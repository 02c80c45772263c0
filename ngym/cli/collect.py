"""ng_collect_rollouts: run every task of a JSONL file through an agent of the running ng_run.

Usage: ng_collect_rollouts +agent_name=NAME +input_jsonl_fpath=IN.jsonl +output_jsonl_fpath=OUT.jsonl
       [+limit=N] [+num_repeats=K] [+num_samples_in_parallel=P] [+responses_create_params={temperature: 0.5}]
       [+overwrite=true] [+head_server.port=11000]

Each finished rollout is appended to the output as one JSON line; failed ones go to OUT.failures.jsonl.
Rerunning the same command resumes: rollouts already in the output are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import uvloop
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ngym.cli.common import repo_root, run_cli
from ngym.config.errors import ConfigError
from ngym.config.instances import DEFAULT_HEAD_PORT, DEFAULT_HOST, connect_host
from ngym.config.load import load_config
from ngym.config.validation import describe_validation_error
from ngym.rollouts.collect import CollectPlan, collect
from ngym.servers.head import fetch_from_head, wait_until_ready

EXIT_SOME_FAILED = 3
EXIT_INCOMPLETE = 4  # stopped (Ctrl-C, SIGTERM) before every rollout ran: run the same command again to finish


class HeadServerArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = DEFAULT_HOST
    port: int = DEFAULT_HEAD_PORT


class CollectArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_name: str
    input_jsonl_fpath: Path
    output_jsonl_fpath: Path
    limit: int | None = Field(default=None, ge=0)
    num_repeats: int = Field(default=1, ge=1)
    num_samples_in_parallel: int = Field(default=64, ge=1)
    responses_create_params: dict[str, Any] | None = None
    overwrite: bool = False
    rollout_timeout_s: float = Field(default=3600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    max_consecutive_failures: int = Field(default=25, ge=1)
    ready_timeout_s: float = Field(default=600.0, gt=0)
    head_server: HeadServerArgs = HeadServerArgs()


def parse_args(args: list[str]) -> CollectArgs:
    values = load_config(args, repo_root(), use_env_file=False).values
    try:
        return CollectArgs.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, CollectArgs, "", "invalid arguments")) from None


def find_agent(head: HeadServerArgs, agent_name: str, ready_timeout: float) -> str:
    host = connect_host(head.host)

    def say_waiting() -> None:
        print(
            f"ng_collect_rollouts: waiting for ng_run (head server http://{host}:{head.port}) to be ready",
            file=sys.stderr,
        )

    wait_until_ready(host, head.port, ready_timeout, say_waiting)
    servers = fetch_from_head(host, head.port, "/servers")
    agents = {s["name"]: s for s in servers if s.get("server_type") == "responses_api_agents"}
    if agent_name not in agents:
        known = ", ".join(sorted(agents)) or "none"
        raise ConfigError(f"+agent_name={agent_name}: no such agent in the running ng_run (agents: {known})")
    return str(agents[agent_name]["url"])


def run(args: list[str]) -> int:
    """ng_collect_rollouts +agent_name=... +input_jsonl_fpath=... +output_jsonl_fpath=... [+limit=N]"""
    parsed = parse_args(args)
    root = repo_root()
    plan = CollectPlan(
        agent_url=find_agent(parsed.head_server, parsed.agent_name, parsed.ready_timeout_s),
        input_path=root / parsed.input_jsonl_fpath,
        output_path=root / parsed.output_jsonl_fpath,
        limit=parsed.limit,
        num_repeats=parsed.num_repeats,
        num_samples_in_parallel=parsed.num_samples_in_parallel,
        responses_create_params=parsed.responses_create_params,
        overwrite=parsed.overwrite,
        rollout_timeout_s=parsed.rollout_timeout_s,
        max_attempts=parsed.max_attempts,
        max_consecutive_failures=parsed.max_consecutive_failures,
    )
    summary = uvloop.run(collect(plan, sys.stderr))
    print(summary.table(summary.wall_seconds))
    print(f"output: {plan.output_path}")
    if summary.failed:
        return EXIT_SOME_FAILED
    return EXIT_INCOMPLETE if summary.missing else 0


def main(argv: list[str] | None = None) -> int:
    return run_cli("ng_collect_rollouts", run, argv)


if __name__ == "__main__":
    sys.exit(main())
