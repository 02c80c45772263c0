"""What ng_run hands each server (issue 16): its own section, the run-wide settings servers read and where the
others listen; never the whole configuration, so one server never holds another's secrets."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ngym.config.errors import ConfigError
from ngym.config.instances import InstanceSpec
from ngym.config.load import load_config
from ngym.placement.directory import Directory, DirectoryEntry
from ngym.placement.local import LocalProcesses
from ngym.placement.spec import ServerLaunch
from ngym.servers.supervisor import RunPlan, plan_run
from resources_servers.simple_weather.app import SimpleWeather
from responses_api_agents.simple_agent.app import SimpleAgent
from responses_api_models.vllm_model.app import VllmModel

ROOT = Path(__file__).resolve().parents[2]
SEED_PATHS = (
    "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml, "
    "resources_servers/simple_weather/configs/simple_weather.yaml]"
)
KEY = "sk-model-only-5e1d"
HF = "hf_secret_9a8b7c"
ENV = ["+policy_base_url=http://127.0.0.1:1/v1", f"+policy_api_key={KEY}", "+policy_model_name=m", f"+hf_token={HF}"]
WEATHER = "simple_weather.resources_servers.simple_weather"


def plan(*args: str) -> RunPlan:
    return plan_run(load_config([SEED_PATHS, *ENV, "+head_server.port=0", *args], ROOT, use_env_file=False))


def launches(run: RunPlan) -> dict[str, ServerLaunch]:
    placement = run.placement
    assert isinstance(placement, LocalProcesses)
    directory = placement.directory()
    return {child.name: child.instance.launch(run.config, directory, child.replica) for child in placement.children}


def test_each_server_gets_its_own_section_the_settings_and_the_directory_only() -> None:
    run = plan()
    try:
        handed = launches(run)
        agent, weather, model = handed["simple_weather_simple_agent"], handed["simple_weather"], handed["policy_model"]
        for launch in (agent, weather):
            text = launch.model_dump_json()
            assert KEY not in text, f"{launch.instance} was handed the model server's api_key"
            assert set(launch.config_view()) == {"run_dir", "hf_token", launch.instance}
        assert KEY in model.model_dump_json()  # the model server does need its own key
        assert agent.settings == {"run_dir": run.config["run_dir"], "hf_token": HF}
        urls = {child.spec.name: child.url for child in run.children}
        assert {name: list(entry.urls) for name, entry in agent.directory.items()} == {
            name: [url] for name, url in urls.items()
        }
        assert agent.directory["policy_model"].server_type == "responses_api_models"
    finally:
        run.close_sockets()


def test_a_server_built_from_its_launch_finds_the_others_and_redacts_what_it_holds() -> None:
    run = plan()
    try:
        handed = launches(run)
        agent = SimpleAgent.from_launch(handed["simple_weather_simple_agent"])
        model_url = next(child.url for child in run.children if child.spec.name == "policy_model")
        assert agent.directory.url({"type": "responses_api_models", "name": "policy_model"}) == model_url
        assert "policy_model" not in agent.context.config
        assert KEY not in agent.context.secrets and HF in agent.context.secrets
        model = VllmModel.from_launch(handed["policy_model"])
        assert model.context.redact(f"key {KEY} and {HF}") == "key *** and ***"
    finally:
        run.close_sockets()


def test_from_config_hands_the_same_view_as_ng_run() -> None:
    config = load_config([SEED_PATHS, *ENV], ROOT, use_env_file=False).values
    weather = SimpleWeather.from_config(config, "simple_weather")
    assert set(weather.context.config) == {"hf_token", "simple_weather"}
    assert KEY not in weather.context.secrets


def test_directory_errors_name_the_instance() -> None:
    directory = Directory({"m": DirectoryEntry(server_type="responses_api_models", implementation="vllm_model")})
    with pytest.raises(ConfigError, match="no server instance named 'x' \\(known: m\\)"):
        directory.url("x")
    with pytest.raises(ConfigError, match="'m' is a responses_api_models instance, not resources_servers"):
        directory.url({"type": "resources_servers", "name": "m"})
    with pytest.raises(ConfigError, match="server instance 'm' has no address yet"):
        directory.url("m")


def test_replicas_get_a_port_each_and_the_section_names_the_first() -> None:
    run = plan(f"++{WEATHER}.num_replicas=3")
    try:
        weather = [child for child in run.children if child.spec.name == "simple_weather"]
        assert [child.name for child in weather] == ["simple_weather#0", "simple_weather#1", "simple_weather#2"]
        ports = {child.sock.getsockname()[1] for child in weather}
        assert len(ports) == 3
        assert (
            run.config["simple_weather"]["resources_servers"]["simple_weather"]["port"]
            == (weather[0].sock.getsockname()[1])
        )
        entry = launches(run)["simple_weather#2"]
        assert entry.replica == 2 and len(entry.directory["simple_weather"].urls) == 3
    finally:
        run.close_sockets()


def test_a_fixed_port_for_several_replicas_is_refused() -> None:
    with pytest.raises(ConfigError, match=rf"{WEATHER}\.port: 2 replicas cannot share port 18555"):
        plan(f"++{WEATHER}.num_replicas=2", f"++{WEATHER}.port=18555")


def test_ray_resources_without_a_ray_cluster_are_refused_naming_the_keys() -> None:
    with pytest.raises(ConfigError) as info:
        plan(f"++{WEATHER}.num_gpus=1", f"++{WEATHER}.resources={{second_machine: 1}}")
    message = str(info.value)
    assert f"{WEATHER}.num_gpus, {WEATHER}.resources" in message and "ray_head_node_address is not set" in message


def test_a_launch_that_is_not_one_is_a_clear_error_without_its_values() -> None:
    bad = orjson.dumps({"instance": "w", "server_type": "resources_servers", "section": {"api_key": KEY}})
    result = subprocess.run(
        [sys.executable, "-m", "ngym.servers.launch", "--root", str(ROOT), "--fd", "0"],
        input=bad, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "the server launch on standard input is not valid (implementation: Field required)" in err
    assert KEY not in err


def test_on_a_ray_cluster_servers_start_after_those_they_refer_to_and_a_cycle_is_refused() -> None:
    from ngym.placement.ray_actors import start_order
    from ngym.placement.spec import PlannedInstance

    def instance(name: str, *refers_to: str) -> PlannedInstance:
        section = {"entrypoint": "app.py", **{f"r{i}": {"type": "resources_servers", "name": n}
                                              for i, n in enumerate(refers_to)}}  # fmt: skip
        return PlannedInstance(InstanceSpec(name, "resources_servers", "x", section))

    waves = start_order([instance("agent", "env", "judge"), instance("env", "judge"), instance("judge")])
    assert [[i.name for i in wave] for wave in waves] == [["judge"], ["env"], ["agent"]]
    with pytest.raises(ConfigError, match=r"refer to each other in a cycle \(a, b\)"):
        start_order([instance("a", "b"), instance("b", "a"), instance("c")])


def test_a_ray_cluster_without_ray_installed_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(
        ConfigError,
        match=r"ray_head_node_address \(set at command line .*\): servers on a Ray cluster need Ray .*ngym\[ray\]",
    ):
        plan("+ray_head_node_address=127.0.0.1:6379")


def test_on_a_ray_cluster_a_host_or_a_shared_port_is_refused_before_anything_starts() -> None:
    with pytest.raises(ConfigError) as info:
        plan("+ray_head_node_address=127.0.0.1:6379", f"++{WEATHER}.host=0.0.0.0",
             f"++{WEATHER}.num_replicas=2", f"++{WEATHER}.port=18555")  # fmt: skip
    message = str(info.value)
    assert f"{WEATHER}.host: on a Ray cluster each replica listens on its node's address" in message
    assert f"{WEATHER}.port: 2 replicas cannot share port 18555" in message
