"""ng_collect_rollouts' command line: NeMo Gym's arguments honoured or refused by name, paths found as NeMo
Gym finds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ngym.cli.collect import CHECKOUT_ROOT, DEFAULT_PARALLEL, build_plan, main, parse_args, resolve_path
from ngym.config.errors import ConfigError

EXAMPLE = "resources_servers/simple_weather/data/example.jsonl"
PATHS = [f"+input_jsonl_fpath={EXAMPLE}", "+output_jsonl_fpath=out/rollouts.jsonl"]


def test_nemo_gyms_arguments_are_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompt.yaml").write_text("user: '{question}'\n")
    parsed = parse_args([
        *PATHS, "+agent_name=a", "+limit=3", "+num_repeats={a: 2, _default: 1}", "+num_repeats_add_seed=true",
        "+prompt_config=prompt.yaml", "+num_samples_in_parallel=null", "+responses_create_params.temperature=0.5",
        "+upload_rollouts_to_wandb=false", "+disable_aggregation=true", "+resume_from_cache=false",
    ])  # fmt: skip
    plan = build_plan(parsed, {"a": "http://127.0.0.1:1"})
    source = plan.source
    assert source.path == CHECKOUT_ROOT / EXAMPLE, "not in the current directory: found in the checkout"
    assert (source.limit, source.agent_name, source.add_seed) == (3, "a", True)
    assert source.num_repeats == {"a": 2, "_default": 1}
    assert source.params_override == {"temperature": 0.5}
    assert source.prompt is not None and source.prompt.path == tmp_path / "prompt.yaml"
    assert plan.output_path == tmp_path / "out" / "rollouts.jsonl"
    assert plan.num_samples_in_parallel == DEFAULT_PARALLEL
    assert plan.overwrite, "+resume_from_cache=false starts afresh, as in NeMo Gym"
    assert not build_plan(parse_args([*PATHS, "+resume_from_cache=true"]), {}).overwrite


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["+split=train"], r"\+split: an argument of NeMo Gym's end-to-end collection \(`gym eval run` without"),
        (["+temperature=0.5"], r"temperature: unknown key"),
        (["+skills.path=skills"], r"\+skills: NeMo Gym's run-level Agent Skills are not supported"),
        (["+num_repeats={a: 0}"], r"num_repeats: Value error, every number of repeats must be at least 1"),
        (["+limit=-1"], r"limit: Input should be greater than or equal to 0"),
        (["+overwrite=true", "+resume_from_cache=true"], r"contradict each other"),
        (["+config_paths=[nope.yaml]"], r"\+config_paths: file not found: 'nope\.yaml'"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_args([*PATHS, *args])


def test_head_server_comes_from_config_paths_files_as_in_nemo_gym(tmp_path: Path) -> None:
    inner = tmp_path / "inner.yaml"
    inner.write_text("head_server: {host: 127.0.0.1, port: 12345}\nsome_server: {responses_api_agents: {}}\n")
    outer = tmp_path / "outer.yaml"
    outer.write_text(f"config_paths: [{inner}]\npolicy_model: {{base_url: '${{policy_base_url}}'}}\n")
    assert parse_args([*PATHS, f"+config_paths=[{outer}]"]).head_server.port == 12345
    assert parse_args([*PATHS, f"+config_paths=[{outer}]", "+head_server.port=7"]).head_server.port == 7


def test_a_path_is_looked_up_in_the_current_directory_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resources_servers/simple_weather/data").mkdir(parents=True)
    (tmp_path / EXAMPLE).write_text("{}\n")
    assert resolve_path(EXAMPLE, "+input_jsonl_fpath") == tmp_path / EXAMPLE
    with pytest.raises(ConfigError, match=rf"\+input_jsonl_fpath: file not found: 'x\.jsonl' \(looked for {tmp_path}"):
        resolve_path("x.jsonl", "+input_jsonl_fpath")


def test_a_missing_input_is_reported_before_waiting_for_ng_run(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["+input_jsonl_fpath=nope.jsonl", "+output_jsonl_fpath=o.jsonl", "+head_server.port=1"])
    assert code == 2
    assert "+input_jsonl_fpath: file not found: 'nope.jsonl'" in capsys.readouterr().err
