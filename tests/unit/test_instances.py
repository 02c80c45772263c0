from pathlib import Path

import pytest

from ngym.config.errors import ConfigError
from ngym.config.load import load_config
from ngym.servers.supervisor import RunPlan, plan_run

ROOT = Path(__file__).resolve().parents[2]
SEED_PATHS = (
    "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml, "
    "resources_servers/simple_weather/configs/simple_weather.yaml]"
)
ENV = ["+policy_base_url=http://127.0.0.1:1/v1", "+policy_api_key=secret-key", "+policy_model_name=m"]


def plan(*args: str) -> RunPlan:
    return plan_run(load_config([*args], ROOT, use_env_file=False))


def test_seed_config_plans_three_servers_on_distinct_ports() -> None:
    run = plan(SEED_PATHS, *ENV, "+head_server.port=0")
    try:
        names = {c.spec.name: c for c in run.children}
        assert set(names) == {"policy_model", "simple_weather", "simple_weather_simple_agent"}
        ports = {c.sock.getsockname()[1] for c in run.children}
        assert len(ports) == 3 and 0 not in ports
        section = run.config["policy_model"]["responses_api_models"]["vllm_model"]
        assert section["port"] == names["policy_model"].sock.getsockname()[1]
        assert section["host"] == "127.0.0.1"
    finally:
        run.close_sockets()


def test_misspelt_key_names_the_key_and_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError) as info:
        plan(SEED_PATHS, *ENV, "++policy_model.responses_api_models.vllm_model.bse_url=http://x/v1")
    assert "policy_model.responses_api_models.vllm_model.bse_url: unknown key (did you mean 'base_url'?)" in str(
        info.value
    )


def test_reference_to_missing_instance_is_an_error_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match=r"refers to responses_api_models instance 'policy_model'"):
        plan("+config_paths=[resources_servers/simple_weather/configs/simple_weather.yaml]")


def test_almost_server_is_reported_with_field_and_reason_unless_turned_off() -> None:
    broken = "+broken={resources_servers: {simple_weather: {domain: x}}}"
    with pytest.raises(ConfigError, match=r"broken\.resources_servers\.simple_weather: missing 'entrypoint'"):
        plan(SEED_PATHS, *ENV, broken)
    run = plan(SEED_PATHS, *ENV, broken, "+error_on_almost_servers=false", "+head_server.port=0")
    run.close_sockets()


def test_invalid_value_is_reported_and_api_key_is_never_shown() -> None:
    with pytest.raises(ConfigError) as info:
        plan(SEED_PATHS, "+policy_base_url=localhost:8000", "+policy_api_key=secret-key", "+policy_model_name=m")
    assert "base_url" in str(info.value) and "http" in str(info.value)
    assert "secret-key" not in str(info.value)


def test_port_in_use_is_named() -> None:
    first = plan(SEED_PATHS, *ENV, "+head_server.port=0")
    try:
        taken = first.children[0].sock.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"head_server\.port: cannot listen on 127\.0\.0\.1:{taken}"):
            plan(SEED_PATHS, *ENV, f"+head_server.port={taken}")
    finally:
        first.close_sockets()
