"""ng_collect_rollouts: run every task of a JSONL file through the agents of the running ng_run.

Usage: ng_collect_rollouts +input_jsonl_fpath=IN.jsonl +output_jsonl_fpath=OUT.jsonl [+agent_name=NAME]
       [+limit=N] [+num_repeats=K | "+num_repeats={agent: K, _default: 1}"] [+num_repeats_add_seed=true]
       [+num_samples_in_parallel=P] [+responses_create_params.temperature=0.5] [+prompt_config=PROMPT.yaml]
       [+resume_from_cache=true|false] [+overwrite=true] [+progress_interval_s=2] [+head_server.port=11000]

A row's `agent_ref.name` picks its agent; +agent_name is for rows without one. Each finished rollout is
appended to the output as one JSON line, with NeMo Gym's `_ng_task_index` and `_ng_rollout_index`; failed ones
go to OUT.failures.jsonl; OUT.progress.json says how far the run is (every +progress_interval_s seconds, 0: not
written). Rerunning the same command resumes: rollouts already in the output are skipped. Then
each agent's environment computes its metrics over the output (`/aggregate_metrics`, NeMo Gym's environments),
written to OUT_aggregate_metrics.json; +disable_aggregation=true skips that.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import uvloop
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ngym.cli.common import repo_root, run_cli
from ngym.config.errors import ConfigError
from ngym.config.instances import DEFAULT_HEAD_PORT, DEFAULT_HOST, connect_host
from ngym.config.load import CONFIG_PATHS_KEY, ENV_FILE_NAME, load_config, parse_overrides
from ngym.config.validation import describe_validation_error
from ngym.rollouts.aggregate import aggregate_after_collection, aggregate_metrics_path
from ngym.rollouts.collect import CollectPlan, collect
from ngym.rollouts.engine import AgentUrls
from ngym.rollouts.output_lock import OutputLock
from ngym.rollouts.progress import DEFAULT_INTERVAL_S
from ngym.rollouts.prompt import Prompt
from ngym.rollouts.tasks import TaskSource
from ngym.servers.head import agents_of, fetch_from_head, wait_until_ready

EXIT_SOME_FAILED = 3
EXIT_INCOMPLETE = 4  # stopped (Ctrl-C, SIGTERM) before every rollout ran: run the same command again to finish
EXIT_METRICS_FAILED = 5  # every rollout collected, but an environment's /aggregate_metrics failed
DEFAULT_PARALLEL = 64
E2E_ONLY = ("split", "reuse_existing_data_preparation")  # NeMo Gym's E2ERolloutCollectionConfig
# The checkout ngym runs from: relative input paths not found in the current directory are looked up here,
# as NeMo Gym looks them up in its own checkout.
CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


class HeadServerArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = DEFAULT_HOST
    port: int = DEFAULT_HEAD_PORT


class CollectArgs(BaseModel):
    """NeMo Gym's RolloutCollectionConfig, key for key, and ngym's own settings after it."""

    model_config = ConfigDict(extra="forbid")

    input_jsonl_fpath: str
    output_jsonl_fpath: str
    agent_name: str | None = None
    limit: int | None = Field(default=None, ge=0)
    num_repeats: int | dict[str, int] = 1
    num_repeats_add_seed: bool = False
    resume_from_cache: bool | None = None
    prompt_config: str | None = None
    num_samples_in_parallel: int | None = Field(default=None, ge=1)
    responses_create_params: dict[str, Any] = Field(default_factory=dict)
    # ngym has no W&B run to upload to: accepted, changes nothing.
    upload_rollouts_to_wandb: bool = True
    disable_aggregation: bool = False  # skip the environments' /aggregate_metrics after collecting
    skills: Any = None

    overwrite: bool = False
    rollout_timeout_s: float = Field(default=3600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    max_consecutive_failures: int = Field(default=25, ge=1)
    progress_interval_s: float = Field(default=DEFAULT_INTERVAL_S, ge=0)  # the progress file's period; 0: none
    ready_timeout_s: float = Field(default=600.0, gt=0)
    head_server: HeadServerArgs = HeadServerArgs()

    @field_validator("num_repeats")
    @classmethod
    def _at_least_one(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        counts = value.values() if isinstance(value, dict) else [value]
        if any(count < 1 for count in counts):
            raise ValueError("every number of repeats must be at least 1")
        return value

    def refused(self) -> str | None:
        if self.skills is not None:
            return "+skills: NeMo Gym's run-level Agent Skills are not supported by ngym's agents"
        if self.overwrite and self.resume_from_cache:
            return "+overwrite=true and +resume_from_cache=true contradict each other: pass one"
        return None


def parse_args(args: list[str]) -> CollectArgs:
    """The command line; a head_server not given there is read, as NeMo Gym reads it, from the +config_paths
    files or env.yaml (their servers are found through the head server, so nothing else of them is needed)."""
    own, config_paths = _split_config_paths(args)
    values = load_config(own, repo_root(), use_env_file=False).values
    if "head_server" not in values:
        head = _head_server_from_files(config_paths)
        if head is not None:
            values["head_server"] = head
    for key in E2E_ONLY:
        if key in values:
            raise ConfigError(
                f"+{key}: an argument of NeMo Gym's end-to-end collection (`gym eval run` without --no-serve), "
                "which starts the servers itself; ng_collect_rollouts collects from a running ng_run"
            )
    try:
        parsed = CollectArgs.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, CollectArgs, "", "invalid arguments")) from None
    refused = parsed.refused()
    if refused:
        raise ConfigError(refused)
    return parsed


def _split_config_paths(args: list[str]) -> tuple[list[str], list[str]]:
    """NeMo Gym's docs pass ng_run's +config_paths to ng_collect_rollouts too: split them off."""
    own: list[str] = []
    paths: list[str] = []
    for arg in args:
        (override,) = parse_overrides([arg]) or (None,)
        if override is None or override.key_or_group != CONFIG_PATHS_KEY:
            own.append(arg)
            continue
        value = override.value()
        listed = value.split(",") if isinstance(value, str) else value
        if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
            raise ConfigError(f"{arg!r}: config_paths must be a list of file paths")
        paths.extend(p.strip() for p in listed if p.strip())
    return own, paths


def _head_server_from_files(entries: list[str]) -> dict[str, Any] | None:
    """The last head_server mapping in the files (and the files they name), or env.yaml's."""
    head: dict[str, Any] | None = None
    seen: set[Path] = set()

    def visit(entry: str) -> None:
        nonlocal head
        path = resolve_path(entry, "+config_paths")
        if path in seen:
            return
        seen.add(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"+config_paths: cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            return
        nested = data.get(CONFIG_PATHS_KEY)
        for inner in nested if isinstance(nested, list) else []:
            if isinstance(inner, str):
                visit(inner)
        if isinstance(data.get("head_server"), dict):
            head = dict(data["head_server"])

    for entry in entries:
        visit(entry)
    env_file = repo_root() / ENV_FILE_NAME
    if head is None and env_file.is_file():
        env = yaml.safe_load(env_file.read_text(encoding="utf-8"))
        if isinstance(env, dict) and isinstance(env.get("head_server"), dict):
            head = dict(env["head_server"])
    return head


def resolve_path(given: str, what: str) -> Path:
    """A path as NeMo Gym finds its input: absolute, else from the current directory, else from the checkout."""
    path = Path(given).expanduser()
    candidates = [path] if path.is_absolute() else [repo_root() / path, CHECKOUT_ROOT / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    looked = " and ".join(str(c) for c in dict.fromkeys(candidates))
    raise ConfigError(f"{what}: file not found: {given!r} (looked for {looked})")


def find_agents(head: HeadServerArgs, ready_timeout: float) -> dict[str, list[str]]:
    """Every agent of the running ng_run, by name: the URL of each of its replicas."""
    host = connect_host(head.host)

    def say_waiting() -> None:
        print(
            f"ng_collect_rollouts: waiting for ng_run (head server http://{host}:{head.port}) to be ready",
            file=sys.stderr,
        )

    wait_until_ready(host, head.port, ready_timeout, say_waiting)
    servers = fetch_from_head(host, head.port, "/servers")
    return agents_of(servers)


def build_plan(parsed: CollectArgs, agent_urls: AgentUrls) -> CollectPlan:
    prompt = Prompt.load(resolve_path(parsed.prompt_config, "+prompt_config")) if parsed.prompt_config else None
    source = TaskSource(
        path=resolve_path(parsed.input_jsonl_fpath, "+input_jsonl_fpath"),
        limit=parsed.limit,
        agent_name=parsed.agent_name,
        num_repeats=parsed.num_repeats,
        add_seed=parsed.num_repeats_add_seed,
        params_override=parsed.responses_create_params or None,
        prompt=prompt,
    )
    return CollectPlan(
        agent_urls=agent_urls,
        source=source,
        # NeMo Gym writes where it is told, from the current directory; the folder is created.
        output_path=(repo_root() / Path(parsed.output_jsonl_fpath).expanduser()).resolve(),
        num_samples_in_parallel=parsed.num_samples_in_parallel or DEFAULT_PARALLEL,
        overwrite=parsed.overwrite or parsed.resume_from_cache is False,
        rollout_timeout_s=parsed.rollout_timeout_s,
        max_attempts=parsed.max_attempts,
        max_consecutive_failures=parsed.max_consecutive_failures,
        progress_interval_s=parsed.progress_interval_s,
    )


def run(args: list[str]) -> int:
    """ng_collect_rollouts +input_jsonl_fpath=... +output_jsonl_fpath=... [+agent_name=...] [+limit=N]"""
    parsed = parse_args(args)
    # Paths and the output's lock first: a typo in a file name, or another run on the output, should not wait
    # for ng_run.
    with OutputLock.acquire(build_plan(parsed, {}).output_path, "ng_collect_rollouts") as lock:
        return run_locked(parsed, lock)


def run_locked(parsed: CollectArgs, lock: OutputLock) -> int:
    """Collect with the output's lock already held (taken by `run`, or by `gym eval run` before the servers)."""
    plan = build_plan(parsed, find_agents(parsed.head_server, parsed.ready_timeout_s))
    aggregate_metrics_path(plan.output_path).unlink(missing_ok=True)  # never metrics of an earlier run
    summary = uvloop.run(collect(plan, sys.stderr, lock=lock))
    print(summary.table(summary.wall_seconds))
    print(f"output: {plan.output_path}")
    metrics_ok = True
    if not parsed.disable_aggregation and not summary.missing:
        host = connect_host(parsed.head_server.host)
        metrics_ok = aggregate_after_collection(plan.output_path, host, parsed.head_server.port, sys.stderr)
    if summary.failed:
        return EXIT_SOME_FAILED
    if summary.missing:
        return EXIT_INCOMPLETE
    return 0 if metrics_ok else EXIT_METRICS_FAILED


def main(argv: list[str] | None = None) -> int:
    return run_cli("ng_collect_rollouts", run, argv)


if __name__ == "__main__":
    sys.exit(main())
