"""The budget and back-off of local restarts (issue 24), and `max_restarts` accepted for local processes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from ngym.cli.status import restart_note
from ngym.config.errors import ConfigError
from ngym.config.load import load_config
from ngym.config.secrets import redact_text, secret_values
from ngym.placement.base import ReplicaInfo
from ngym.placement.restarts import DEFAULT_LOCAL_MAX_RESTARTS, RestartPolicy, describe_exit
from ngym.servers.head import servers_listing
from ngym.servers.supervisor import plan_run

ROOT = Path(__file__).resolve().parents[2]
SEED_PATHS = (
    "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml, "
    "resources_servers/simple_weather/configs/simple_weather.yaml]"
)
ENV = ["+policy_base_url=http://127.0.0.1:1/v1", "+policy_api_key=x", "+policy_model_name=m", "+head_server.port=0"]
WEATHER = "simple_weather.resources_servers.simple_weather"


def test_the_budget_counts_restarts_and_minus_one_has_none() -> None:
    default = RestartPolicy.for_instance(None)
    assert default.max_restarts == DEFAULT_LOCAL_MAX_RESTARTS
    assert [default.allows(n) for n in range(DEFAULT_LOCAL_MAX_RESTARTS + 1)] == [True] * 3 + [False]
    assert not RestartPolicy.for_instance(0).allows(0)
    unlimited = RestartPolicy.for_instance(-1)
    assert unlimited.allows(10**6) and unlimited.budget() == "unlimited"


def test_the_back_off_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(max_restarts=-1, base_s=0.5, max_s=30.0)
    assert [policy.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert policy.delay(10**6) == 30.0


def test_an_exit_is_told_by_its_code_or_its_signal() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by signal SIGKILL"
    assert describe_exit(0) == "exit code 0"


def test_max_restarts_is_meaningful_for_local_processes_and_checked() -> None:
    run = plan_run(load_config([SEED_PATHS, *ENV, f"++{WEATHER}.max_restarts=1"], ROOT, use_env_file=False))
    try:
        weather = next(child for child in run.children if child.spec.name == "simple_weather")
        assert weather.instance.max_restarts == 1
    finally:
        run.close_sockets()
    with pytest.raises(ConfigError, match="max_restarts"):
        plan_run(load_config([SEED_PATHS, *ENV, f"++{WEATHER}.max_restarts=-2"], ROOT, use_env_file=False))


def test_servers_lists_each_replicas_restarts_with_its_last_output_redacted() -> None:
    config = {"weather": {"resources_servers": {"simple_weather": {"entrypoint": "app.py", "api_key": "sk-hidden-1"}}}}
    replica = ReplicaInfo(
        instance="weather",
        replica=0,
        label="weather",
        kind="resources_servers/simple_weather",
        url="http://127.0.0.1:9",
        pid=42,
        restarts=2,
        last_exit="exit code 1",
        last_output=("starting", "failed with key sk-hidden-1"),
    )
    (entry,) = servers_listing(config, [replica], lambda line: redact_text(line, secret_values(config)))
    assert entry["urls"] == ["http://127.0.0.1:9"]
    (listed,) = entry["replicas"]
    assert (listed["pid"], listed["restarts"], listed["last_exit"]) == (42, 2, "exit code 1")
    assert listed["last_output"][0] == "starting" and "sk-hidden-1" not in listed["last_output"][1]
    assert "restarted 2 time(s), last after exit code 1" in restart_note(listed)
