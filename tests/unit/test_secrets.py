"""Secrets are found by what they are, not by substrings of key names (issue: `max_tokens` shown as ***)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngym.config.secrets import REDACTED, is_secret_key, redact, redact_override, redact_text, redact_url
from ngym.http.app import serve_in_background
from ngym.rollouts.output import JsonlAppender
from ngym.servers.head import HeadState, head_app
from ngym.viewer.server import viewer_app
from ngym.viewer.state import Viewer, ViewerConfig
from testkit.secret_strategies import NOT_SECRET_NAMES, appearances, secret_names, secret_values
from testkit.viewer_rows import synthetic_rows

KEY = "sk-live-7f1c2a9e4b"


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "policy_api_key",
        "apiKey",
        "X-Api-Key",
        "OPENAI_API_KEY",
        "Authorization",
        "hf_token",
        "token",
        "access_token",
        "password",
        "client_secret",
        "Cookie",
        "a.b.api_key",
        # issue 23: plurals and forms
        "api_keys",
        "judge_api_keys",
        "JUDGE_API_KEYS",
        "apiKeys",
        "access_tokens",
        "refresh_tokens",
        "auth_header",
        "authHeader",
        "Proxy-Authorization",
        "x-auth-token",
        "token_value",
        "hf_token_value",
        "private_key",
        "private_key_pem",
        "ssh_private_key",
        "db_password",
        "passwords",
        "secret_access_key",
        "bearer",
        "github_pat",
        "api_key_2",
        "session_cookie",
    ],
)
def test_secret_keys(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    [
        "max_tokens",
        "return_token_id_information",
        "token_exact",
        "tokenizer",
        "top_logprobs",
        "max_output_tokens",
        "prompt_token_ids",
        "keyword",
        "monkey",
        "base_url",
        "model",
        "max_context_tokens",
        "input_tokens",
        "total_tokens",
        "tokens_per_second",
        "generation_token_ids",
        "eos_token",
        "pad_token",
        "sort_key",
        "keys",
        "default_headers",
        "session_id",
        "author",
    ],
)
def test_keys_that_only_look_secret(name: str) -> None:
    assert not is_secret_key(name)


def test_a_resolved_configuration_keeps_settings_and_loses_every_copy_of_a_key() -> None:
    config = {
        "policy_api_key": KEY,
        "policy_model": {
            "responses_api_models": {
                "vllm_model": {
                    "base_url": [f"http://user:{KEY}@127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"],
                    "api_key": KEY,
                    "max_tokens": 100,
                    "return_token_id_information": True,
                    "token_exact": "auto",
                    "default_headers": {"X-Api-Key": KEY, "Authorization": f"Bearer {KEY}", "X-Team": "rl"},
                    "extra_body": {"vendor_options": f"key={KEY}", "top_k": 5},
                }
            }
        },
    }
    shown = redact(config)
    assert KEY not in orjson.dumps(shown).decode()
    section = shown["policy_model"]["responses_api_models"]["vllm_model"]
    assert section["base_url"] == ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1"]
    assert section["max_tokens"] == 100 and section["return_token_id_information"] is True
    assert section["token_exact"] == "auto"
    assert section["default_headers"] == {"X-Api-Key": REDACTED, "Authorization": REDACTED, "X-Team": "rl"}
    assert section["extra_body"] == {"vendor_options": f"key={REDACTED}", "top_k": 5}
    assert shown["policy_api_key"] == REDACTED


def test_url_passwords_are_cut_out_of_any_text() -> None:
    text = f"cannot reach http://me:{KEY}@10.0.0.1:8000/v1/models: refused"
    assert redact_text(text) == "cannot reach http://10.0.0.1:8000/v1/models: refused"
    assert redact_url("http://[::1") == REDACTED  # unreadable: nothing of it is shown
    assert redact_url("http://host/v1") == "http://host/v1"


async def test_the_head_servers_config_shows_settings_and_no_key() -> None:
    section = {"entrypoint": "app.py", "base_url": f"http://u:{KEY}@127.0.0.1:9/v1", "api_key": KEY, "model": "m",
               "return_token_id_information": True, "max_tokens": 7}  # fmt: skip
    config = {"policy_api_key": KEY, "policy_model": {"responses_api_models": {"vllm_model": section}}}
    async with serve_in_background(head_app(config, HeadState())) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/config") as resp:
            text = await resp.text()
    assert KEY not in text
    shown = orjson.loads(text)["policy_model"]["responses_api_models"]["vllm_model"]
    assert shown["return_token_id_information"] is True and shown["max_tokens"] == 7
    assert shown["base_url"] == "http://127.0.0.1:9/v1"


@settings(max_examples=300, deadline=None, database=None)
@given(name=secret_names(), value=secret_values(), shown=st.sampled_from(NOT_SECRET_NAMES))
def test_any_secret_name_hides_its_value_and_the_settings_beside_it_stay(name: str, value: str, shown: str) -> None:
    assert is_secret_key(name), name
    assert not is_secret_key(shown), shown
    config = {"section": {name: value, shown: 7, "note": f"uses {value} inside"}, "list_form": {name: [value]}}
    text = orjson.dumps(redact(config)).decode()
    assert not any(form in text for form in appearances(value)), text
    assert f'"{shown}":7' in text


@settings(max_examples=300, deadline=None, database=None)
@given(name=secret_names(), value=secret_values())
def test_an_override_is_shown_without_its_secret_whatever_its_syntax(name: str, value: str) -> None:
    assert redact_override(f"++{name}={value}") == f"++{name}={REDACTED}"
    inline = redact_override(f"++x.default_headers={{model: m, {name}: {value}, n: 1}}")
    assert inline == f"++x.default_headers={{model: m, {name}: {REDACTED}"  # to the end: `,` `}` may be the key's
    quoted = redact_override(f"++x={{a: 1, '{name}': 'v{value}'}}")
    assert value not in quoted and quoted.startswith("++x={a: 1, ")


async def test_the_viewer_never_shows_a_secret_a_row_holds(tmp_path: Path) -> None:
    rows = list(synthetic_rows(2))
    rows[0]["responses_create_params"]["metadata"] = {"judge_api_keys": [KEY], "auth_header": f"Bearer {KEY}"}
    rows[0]["details"] = {"note": f"copied {KEY} here"}  # a copy in another field: cut out of the row shown
    rows[1]["client_secret"] = KEY  # a verifier's field: not even in the table
    writer = JsonlAppender(tmp_path / "out.jsonl")
    for row in rows:
        writer.write(row)
    writer.close()
    async with serve_in_background(viewer_app(Viewer(ViewerConfig(tmp_path / "out.jsonl")))) as url:
        async with aiohttp.ClientSession() as http:
            while True:  # until the file is indexed
                async with http.get(url + "/api/status") as resp:
                    if (await resp.json())["rows"] == 2:
                        break
            shown = []
            paths = ["/api/rows/r0", "/api/rows/r0/value?path=details.note", "/api/rows/r1", "/api/rows?sort=reward"]
            for path in [*paths, "/api/fields", "/api/groups/0"]:
                async with http.get(url + path) as resp:
                    assert resp.status == 200, path
                    shown.append(await resp.text())
    assert all(KEY not in text for text in shown), shown
    assert REDACTED in shown[0] and "copied *** here" in shown[1]


def test_a_log_probability_entrys_token_is_text() -> None:
    entry = {"token": " weather", "logprob": -0.1, "bytes": None, "top_logprobs": [{"token": " sunny", "logprob": -2}]}
    row = {"response": {"logprobs": {"content": [entry]}, "text": "the weather is fine"}, "token": KEY}
    assert redact(row) == {**row, "token": REDACTED}
