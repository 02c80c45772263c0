"""Secrets are found by what they are, not by substrings of key names (issue: `max_tokens` shown as ***)."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from ngym.config.secrets import REDACTED, is_secret_key, redact, redact_text, redact_url
from ngym.http.app import serve_in_background
from ngym.servers.head import HeadState, head_app

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
