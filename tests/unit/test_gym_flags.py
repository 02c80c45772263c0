"""NeMo Gym's `gym` flags become the Hydra overrides of the ngym command they stand for."""

from __future__ import annotations

from pathlib import Path

import pytest

from ngym.cli.eval_run import dataset_for, split_overrides
from ngym.cli.gym_flags import parser_for, translate
from ngym.config.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
WEATHER = "resources_servers/simple_weather/configs/simple_weather.yaml"
VLLM = "responses_api_models/vllm_model/configs/vllm_model.yaml"
TRAINING = "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml"


def env_start(*argv: str) -> list[str]:
    parser = parser_for("env start", configs=True, model=True, collect=False, json_output=False)
    return translate(parser, argv, ROOT).overrides


def eval_run(*argv: str) -> tuple[list[str], bool]:
    parser = parser_for("eval run", configs=True, model=True, collect=True, json_output=False)
    parsed = translate(parser, argv, ROOT)
    return parsed.overrides, parsed.no_serve


@pytest.fixture(autouse=True)
def _in_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_env_start_flags_as_nemo_gym_documents_them() -> None:
    overrides = env_start(
        "--resources-server", "simple_weather", "--model-type", "vllm_model",
        "--model-url", "http://127.0.0.1:8000/v1", "--model", "Qwen/Qwen3-8B", "--model-api-key", "sk-1",
    )  # fmt: skip
    assert overrides == [
        f"+config_paths=[{WEATHER}, {VLLM}]",
        "++policy_model_name=Qwen/Qwen3-8B",
        "++policy_base_url=http://127.0.0.1:8000/v1",
        "++policy_api_key=sk-1",
    ]


def test_a_flavor_config_files_and_hydra_overrides_mix_into_one_config_paths() -> None:
    overrides = env_start(
        "+config_paths=[extra.yaml]", "--model-type", "vllm_model/vllm_model_for_training", "--config", "mine.yaml",
        "++policy_model.responses_api_models.vllm_model.max_retries=1",
    )  # fmt: skip
    assert overrides == [
        f"+config_paths=[extra.yaml, mine.yaml, {TRAINING}]",
        "++policy_model.responses_api_models.vllm_model.max_retries=1",
    ]


def test_eval_run_flags_map_to_the_collectors_keys() -> None:
    overrides, no_serve = eval_run(
        "--no-serve", "-a", "simple_weather_simple_agent", "-i", "in.jsonl", "-o", "out.jsonl", "--limit", "3",
        "--num-repeats", "4", "--concurrency", "8", "--temperature", "0.5", "--resume", "--disable-aggregation",
    )  # fmt: skip
    assert no_serve
    assert overrides == [
        "++agent_name=simple_weather_simple_agent",
        "++input_jsonl_fpath=in.jsonl",
        "++output_jsonl_fpath=out.jsonl",
        "++limit=3",
        "++num_repeats=4",
        "++num_samples_in_parallel=8",
        "++responses_create_params.temperature=0.5",
        "++resume_from_cache=true",
        "++disable_aggregation=true",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--resources-server", "no_such_env"],
            r"--resources-server no_such_env: no config .*available: simple_weather",
        ),
        (["--model-type", "vllm_model/nope"], r"available: .*vllm_model/vllm_model_for_training"),
        (["--benchmark", "aime24"], r"--benchmark selects NeMo Gym's benchmarks/ catalog, which ngym does not ship"),
        (["--modle-url", "x"], r"unknown flag --modle-url \(flags: .*--model-url"),
    ],
)
def test_bad_flags_are_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        env_start(*argv)


def test_end_to_end_overrides_split_between_ng_run_and_the_collector() -> None:
    overrides, _ = eval_run("--model-url", "http://h/v1", "--limit", "2", "--split", "example", "--temperature", "1")
    for_collector, for_servers, settings = split_overrides(overrides)
    assert for_collector == ["++limit=2", "++responses_create_params.temperature=1"]
    assert for_servers == ["++policy_base_url=http://h/v1"]
    assert settings == {"split": "example"}


def test_without_input_the_agents_dataset_of_the_split_is_used() -> None:
    example = "resources_servers/simple_weather/data/example.jsonl"
    config = {
        "a": {"responses_api_agents": {"simple_agent": {"entrypoint": "app.py", "datasets": [
            {"name": "example", "type": "example", "jsonl_fpath": example},
            {"name": "train", "type": "train", "jsonl_fpath": "data/not_downloaded.jsonl"},
        ]}}},
    }  # fmt: skip
    assert dataset_for(config, None, "example") == ("a", example)
    with pytest.raises(ConfigError, match="ngym does not download datasets"):
        dataset_for(config, None, "train")
    with pytest.raises(ConfigError, match=r"needs --input FILE or --split TYPE .*a: example"):
        dataset_for(config, None, None)
