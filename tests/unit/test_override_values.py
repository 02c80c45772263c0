"""Values are data, never override syntax (issue 23): a `gym` flag's value, any string at all, reaches the
configuration unchanged; a raw override of a secret that Hydra's grammar cannot read is taken as typed; and no
override that fails is ever shown with a secret's value."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngym.cli.gym_flags import merge_config_paths, parser_for, translate
from ngym.cli.run import main as ng_run_main
from ngym.config.errors import ConfigError
from ngym.config.load import load_config, parse_overrides, quote_value, value_text
from ngym.config.secrets import REDACTED
from testkit.secret_strategies import secret_names, secret_values

ROOT = Path(__file__).resolve().parents[2]
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
AWKWARD = [
    "", "=", "a=b", "sk-proj-QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "hf_abcdef{x}", "a,b", "'", '"', "\\", "a\\'b",
    "${x}", "\\${x}", "$", "a\nb", " spaced ", "[1]", "{a: 1}", "null", "true", "12", "1e3", "~", "*",
]  # fmt: skip


def loaded(*args: str, tmp: Path) -> dict[str, object]:
    return load_config(list(args), tmp, use_env_file=False).values


@settings(max_examples=400, deadline=None, database=None)
@given(value=ANY_TEXT)
def test_a_quoted_value_reaches_the_configuration_unchanged(
    value: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.getbasetemp()
    assert loaded(f"++key={quote_value(value)}", tmp=tmp) == {"key": value}
    assert loaded(f"+a.b={value_text(value)}", tmp=tmp) == {"a": {"b": value}}


@pytest.mark.parametrize("value", AWKWARD)
def test_awkward_values_round_trip(value: str, tmp_path: Path) -> None:
    assert loaded(f"++key={value_text(value)}", tmp=tmp_path) == {"key": value}


def env_start(*argv: str) -> list[str]:
    parser = parser_for("env start", configs=True, model=True, collect=False, json_output=False)
    return translate(parser, argv, ROOT).overrides


@settings(max_examples=200, deadline=None, database=None)
@given(key=ANY_TEXT, model=ANY_TEXT, url=ANY_TEXT)
def test_gym_flag_values_are_data(key: str, model: str, url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    # `--flag=VALUE`: argparse's way to pass a value that starts with a dash
    overrides = env_start(f"--model-api-key={key}", f"--model={model}", f"--model-url={url}")
    values = loaded(*overrides, tmp=tmp_path_factory.getbasetemp())
    assert values == {"policy_api_key": key, "policy_model_name": model, "policy_base_url": url}


def test_a_base64_key_from_the_flag_reaches_the_configuration(tmp_path: Path) -> None:
    key = "sk-proj-QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    overrides = env_start("--model-api-key", key, "--model", "Qwen/Qwen3-8B")
    assert "++policy_model_name=Qwen/Qwen3-8B" in overrides  # plain values stay as they are typed
    assert loaded(*overrides, tmp=tmp_path)["policy_api_key"] == key


def test_number_flags_stay_numbers_and_text_stays_text(tmp_path: Path) -> None:
    parser = parser_for("eval run", configs=True, model=True, collect=True, json_output=False)
    overrides = translate(parser, ["--limit", "3", "--temperature", "0.5", "--model", "12", "--split", "a b"], ROOT)
    values = loaded(*overrides.overrides, tmp=tmp_path)
    assert values["limit"] == 3 and values["responses_create_params"] == {"temperature": 0.5}
    assert values["policy_model_name"] == "12" and values["split"] == "a b"
    per_agent = translate(parser, ["--num-repeats", "{weather: 4, _default: 1}"], ROOT).overrides
    assert loaded(*per_agent, tmp=tmp_path)["num_repeats"] == {"weather": 4, "_default": 1}


def test_config_paths_with_awkward_names_are_quoted(tmp_path: Path) -> None:
    merged = merge_config_paths(["dir, with comma/x.yaml", "it's.yaml"], ["+config_paths=[a.yaml]", "+x=1"])
    assert merged[1:] == ["+x=1"]

    (override,) = parse_overrides(merged[:1])  # one override Hydra reads back as the three paths
    assert override.value() == ["a.yaml", "dir, with comma/x.yaml", "it's.yaml"]
    assert merge_config_paths(["b.yaml"], ["+config_paths=[a.yaml]"]) == ["+config_paths=[a.yaml, b.yaml]"]


@settings(max_examples=200, deadline=None, database=None)
@given(name=secret_names(), value=secret_values())
def test_a_raw_secret_override_is_taken_as_typed(
    name: str, value: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`ng_run '++policy_api_key=hf_abcdef{x}'`: Hydra's grammar has no reading of it; a secret is an opaque
    string, so it is the string typed. Anything Hydra reads as data keeps Hydra's reading."""
    if any(ch in value for ch in "\n'\"\\$[]{}, =:") or value.strip() != value:
        try:
            values = loaded(f"++{name}={value}", tmp=tmp_path_factory.getbasetemp())
        except ConfigError as exc:
            assert value not in str(exc) and f"++{name}={REDACTED}" in str(exc)
            return
        assert name in values
        assert value not in repr({k: v for k, v in values.items() if k != name})


@pytest.mark.parametrize("value", ["hf_abcdef{x}", "sk-proj-QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "a,bcdefgh", "k]ey{[,=x"])
def test_the_reproductions_are_accepted(value: str, tmp_path: Path) -> None:
    assert loaded(f"++policy_api_key={value}", tmp=tmp_path) == {"policy_api_key": value}


@settings(max_examples=200, deadline=None, database=None)
@given(name=secret_names(), value=secret_values(), other=secret_values())
def test_no_config_error_shows_a_secret(
    name: str, value: str, other: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.getbasetemp()
    cases = [
        [f"++{name}={quote_value(value)}", f"+{name}={quote_value(other)}"],  # set twice
        [f"{name}={quote_value(value)}"],  # changes a key that is not there
        [f"++x.default_headers={{{name}: {value}", "+y=1"],  # unparseable, the secret inside
        [f"++a={{{name}: {quote_value(value)}}}", "+b=${a.nope}"],  # resolution fails
        [f"++{name}={quote_value(value)}", "++c=${" + name + "}x${missing}"],
    ]
    for args in cases:
        with pytest.raises(ConfigError) as raised:
            loaded(*args, tmp=tmp)
        assert value not in str(raised.value) and other not in str(raised.value), (args, str(raised.value))


def test_ng_run_prints_the_override_that_failed_without_its_secret(capsys: pytest.CaptureFixture[str]) -> None:
    assert ng_run_main(["++policy_api_key=hf_abcdefgh", "+policy_api_key=hf_secret{x}"]) == 2
    err = capsys.readouterr().err
    assert "+policy_api_key=***" in err and "hf_abcdefgh" not in err and "hf_secret" not in err, err
    assert ng_run_main(["++x={Authorization: Bearer sk-live-9f8e7d, a: 1"]) == 2
    err = capsys.readouterr().err
    assert "cannot parse" in err and "sk-live-9f8e7d" not in err and "Authorization: ***" in err, err
