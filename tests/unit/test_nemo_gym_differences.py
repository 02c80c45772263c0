"""Where ngym differs from NeMo Gym on purpose (docs/from_nemo_gym.md): each difference, as behaviour."""

from __future__ import annotations

from pathlib import Path

from ngym.cli.collect import build_plan, parse_args
from ngym.protocol.reasoning import split_think
from ngym.rollouts.output import failures_path
from responses_api_models.local_vllm_model.app import LocalVllmModel
from responses_api_models.vllm_model.config import VllmModelConfig

EXAMPLE = "resources_servers/simple_weather/data/example.jsonl"
PATHS = [f"+input_jsonl_fpath={EXAMPLE}", "+output_jsonl_fpath=out/rollouts.jsonl"]


def test_a_rerun_resumes_unless_told_otherwise() -> None:
    assert not build_plan(parse_args(PATHS), {}).overwrite, "NeMo Gym starts afresh unless +resume_from_cache=true"
    assert build_plan(parse_args([*PATHS, "+resume_from_cache=false"]), {}).overwrite


def test_failed_rollouts_have_their_own_file_beside_the_output() -> None:
    assert failures_path(Path("results/run.jsonl")) == Path("results/run.failures.jsonl")  # NeMo Gym: run_failures


def test_token_ids_are_asked_for_inline_by_default() -> None:
    assert VllmModelConfig.model_fields["request_prompt_and_generation_token_ids"].default is True


def test_several_think_blocks_in_one_turn_are_all_kept() -> None:
    assert split_think("<think>a</think>x<think>b</think>y") == ("xy", "ab")


def test_local_vllm_model_leaves_the_hugging_face_cache_where_it_is_unless_told() -> None:
    section = {"entrypoint": "app.py", "model": "Qwen/Qwen3-8B"}
    config = {"policy_model": {"responses_api_models": {"local_vllm_model": section}}, "hf_token": "hf_secret_1"}
    server = LocalVllmModel.from_config(config, "policy_model")
    env = server._base_env()
    assert "HF_HOME" not in env and env["HF_TOKEN"] == "hf_secret_1"
    section["hf_home"] = "/data/hf"
    assert LocalVllmModel.from_config(config, "policy_model")._base_env()["HF_HOME"] == "/data/hf"
