"""NeMo Gym's vllm_model keys on the chat path, in front of the vLLM stand-in: reasoning history, sequential
reasoning, inline token IDs, per-row template kwargs and extra body, the audio side channel, and the config
combinations refused at start-up (NeMo Gym's three config files among those accepted)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from ngym.config.errors import ConfigError
from responses_api_models.vllm_model.app import VllmModel
from responses_api_models.vllm_model.tests.test_app import (
    MODEL,
    Caller,
    expected_prompt_ids,
    model_config,
    running,
    texts,
)
from testkit.standin.script import StandinScript

REPO_ROOT = Path(__file__).resolve().parents[3]
NEMO_GYM_CONFIGS = REPO_ROOT / "tests" / "data" / "nemo_gym_configs"
THOUGHT = "Think first."
REASONING_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in SF?"},
    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Think first."}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
    {"role": "user", "content": "And LA?"},
]
CHAT_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "<think>Greet back.</think>Hello!", "reasoning": "stale"},
    {"role": "user", "content": "bye"},
]


@pytest.fixture
async def caller() -> AsyncIterator[Caller]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield Caller(http)


# --- reasoning history --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "responses_turn", "chat_turn"),
    [
        (
            {},
            {"role": "assistant", "content": "Sunny.", "reasoning_content": "Think first.", "reasoning": THOUGHT},
            {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back.", "reasoning": "Greet back."},
        ),
        (
            {"uses_interleaved_reasoning": False},
            {"role": "assistant", "content": "Sunny."},
            {"role": "assistant", "content": "Hello!"},
        ),
        (
            {"preserve_reasoning_in_assistant_content": True},
            {"role": "assistant", "content": "<think>Think first.</think>Sunny."},
            CHAT_HISTORY[1],
        ),
    ],
    ids=["interleaved", "not-interleaved", "preserved"],
)
async def test_earlier_reasoning_goes_back_as_configured(
    caller: Caller, options: dict[str, Any], responses_turn: dict[str, Any], chat_turn: dict[str, Any]
) -> None:
    script = StandinScript(reasoning_text="Now.")
    async with running(script, **options) as (vllm, url):
        responses = await caller.responses(url, {"input": REASONING_HISTORY})
        chat = await caller.chat(url, {"messages": CHAT_HISTORY})
        sent_responses, sent_chat = vllm.log.bodies()
    assert sent_responses["messages"][1] == responses_turn
    assert sent_chat["messages"][1] == chat_turn
    # The answer side still follows uses_reasoning_parser: vLLM's reasoning field becomes a reasoning item.
    assert [item["type"] for item in responses.body["output"]] == ["reasoning", "message"]
    assert chat.body["choices"][0]["message"]["content"].startswith("<think>Now.</think>")


async def test_a_turn_of_only_thinking_is_not_sent_back_when_sequential_reasoning_is_off(caller: Caller) -> None:
    thinking_only = [REASONING_HISTORY[0], REASONING_HISTORY[1]]
    chat_thinking_only = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>Hmm.</think>"}]
    async with running(sequential_reasoning_allowed=False) as (vllm, url):
        responses = await caller.responses(url, {"input": thinking_only, "max_output_tokens": 7})
        chat = await caller.chat(url, {"messages": chat_thinking_only})
        # A turn with text or tool calls still goes to vLLM.
        answered = await caller.responses(url, {"input": REASONING_HISTORY})
        assert vllm.log.count() == 1
    assert responses.status == 200, responses.text
    assert responses.body["status"] == "incomplete"
    assert responses.body["incomplete_details"] == {"reason": "content_filter"}
    assert texts(responses.body) == [""] and responses.body["max_output_tokens"] == 7
    choice = chat.body["choices"][0]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] == ""
    assert answered.body["status"] == "completed"
    async with running() as (vllm, url):
        await caller.responses(url, {"input": thinking_only})
        assert vllm.log.count() == 1  # allowed by default: the model is called again


# --- token data -----------------------------------------------------------------------------------------------


async def test_without_inline_token_ids_the_prompt_ids_come_from_tokenize(caller: Caller) -> None:
    options: dict[str, Any] = {"return_token_id_information": True, "request_prompt_and_generation_token_ids": False}
    async with running(token_exact="never", **options) as (vllm, url):
        answer = await caller.responses(url, {"input": "hi"})
        sent = vllm.log.last_body()
        tokenized = vllm.log.bodies("/tokenize")
    assert answer.status == 200, answer.text
    assert "return_token_ids" not in sent
    assert sent["logprobs"] is True and sent["top_logprobs"] == 0 and sent["return_tokens_as_token_ids"] is True
    item = answer.body["output"][-1]
    assert item["prompt_token_ids"] == expected_prompt_ids(sent)
    assert len(item["generation_token_ids"]) == len(item["generation_log_probs"]) > 0
    assert len(tokenized) == 1 and tokenized[0]["messages"] == sent["messages"]


# --- per-row settings -----------------------------------------------------------------------------------------


async def test_metadata_overrides_template_kwargs_and_extra_body_per_row(caller: Caller) -> None:
    options: dict[str, Any] = {
        "chat_template_kwargs": {"enable_thinking": True, "style": "config"},
        "extra_body": {"min_tokens": 10, "top_k": 5},
        "sampling_overrides": {"temperature": 0.0},
    }
    metadata: dict[str, Any] = {
        "chat_template_kwargs": orjson.dumps({"enable_thinking": False}).decode(),
        "extra_body": orjson.dumps({"min_tokens": 20, "repetition_penalty": 1.1}).decode(),
    }
    async with running(**options) as (vllm, url):
        row = await caller.responses(url, {"input": "hi", "metadata": metadata, "top_k": 40, "temperature": 1.0})
        plain = await caller.responses(url, {"input": "hi", "metadata": None})
        as_object = await caller.chat(
            url, {"messages": [{"role": "user", "content": "hi"}], "metadata": {"extra_body": {"min_tokens": 3}}}
        )
        sent_row, sent_plain, sent_object = vllm.log.bodies()
    assert row.status == plain.status == as_object.status == 200
    assert sent_row["chat_template_kwargs"] == {"enable_thinking": False, "style": "config"}
    assert (sent_row["min_tokens"], sent_row["repetition_penalty"], sent_row["top_k"]) == (20, 1.1, 40)
    assert sent_row["temperature"] == 0.0  # sampling_overrides win over the row and the caller
    assert sent_plain["chat_template_kwargs"] == {"enable_thinking": True, "style": "config"}
    assert (sent_plain["min_tokens"], sent_plain["top_k"]) == (10, 5)
    assert sent_object["min_tokens"] == 3


@pytest.mark.parametrize(
    ("metadata", "param"),
    [
        ({"extra_body": "{not json"}, "metadata.extra_body"),
        ({"chat_template_kwargs": "[1, 2]"}, "metadata.chat_template_kwargs"),
    ],
)
async def test_bad_metadata_settings_are_a_422_naming_the_key(
    caller: Caller, metadata: dict[str, Any], param: str
) -> None:
    async with running() as (vllm, url):
        answer = await caller.responses(url, {"input": "hi", "metadata": metadata})
        assert vllm.log.count() == 0
    assert answer.status == 422 and answer.body["error"]["param"] == param


async def test_a_null_top_logprobs_is_not_sent_to_vllm(caller: Caller) -> None:
    async with running() as (vllm, url):
        body = {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": None}
        await caller.chat(url, body)
        sent = vllm.log.last_body()
    assert sent["logprobs"] is True and "top_logprobs" not in sent


# --- audio side channel ---------------------------------------------------------------------------------------

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "


def data_url(payload: bytes, mime: str = "wav") -> str:
    return f"data:audio/{mime};base64,{base64.b64encode(payload).decode()}"


async def test_audio_side_channel_puts_audio_ahead_of_the_last_user_text(caller: Caller, tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(WAV)
    (tmp_path / "b.flac").write_bytes(b"fLaC")
    system = {"role": "system", "content": "Transcribe."}
    async with running(audio_root=str(tmp_path)) as (vllm, url):
        inline = await caller.responses(
            url, {"input": [system, {"role": "user", "content": "Go."}], "metadata": {"audio_data": data_url(WAV)}}
        )
        by_path = await caller.chat(
            url,
            {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Go."}]}],
                "metadata": {"audio_path": "clips/a.wav", "task": "t1"},
            },
        )
        by_paths = await caller.responses(
            url, {"input": "Both.", "metadata": {"audio_paths": ["clips/a.wav", str(tmp_path / "b.flac")]}}
        )
        sent_inline, sent_path, sent_paths = vllm.log.bodies()
    assert inline.status == by_path.status == by_paths.status == 200, by_path.text
    clip = {"type": "audio_url", "audio_url": {"url": data_url(WAV)}}
    assert sent_inline["messages"] == [system, {"role": "user", "content": [clip, {"type": "text", "text": "Go."}]}]
    assert "metadata" not in sent_inline  # its only key was the audio
    assert sent_path["messages"][-1]["content"] == [clip, {"type": "text", "text": "Go."}]
    assert sent_path["metadata"] == {"task": "t1"}
    flac = {"type": "audio_url", "audio_url": {"url": data_url(b"fLaC", "flac")}}
    assert sent_paths["messages"][-1]["content"] == [clip, flac, {"type": "text", "text": "Both."}]
    # The Response echoes the row's metadata as it was sent.
    assert inline.body["metadata"] == {"audio_data": data_url(WAV)}


@pytest.mark.parametrize(
    ("metadata", "root", "param", "words"),
    [
        ({"audio_path": "a.wav"}, False, "metadata.audio_path", "audio_root"),
        ({"audio_path": "missing.wav"}, True, "metadata.audio_path", "not a file"),
        ({"audio_path": "a.txt"}, True, "metadata.audio_path", "unsupported audio extension"),
        ({"audio_paths": "a.wav"}, True, "metadata.audio_paths", "list of file paths"),
        ({"audio_paths": ["a.wav", "nope.wav"]}, True, "metadata.audio_paths[1]", "not a file"),
        ({"audio_data": data_url(WAV), "audio_path": "a.wav"}, True, "metadata.audio_path", "exclusive"),
        ({"audio_data": 7}, True, "metadata.audio_data", "data:audio"),
    ],
)
async def test_audio_side_channel_errors_name_the_key(
    caller: Caller, tmp_path: Path, metadata: dict[str, Any], root: bool, param: str, words: str
) -> None:
    (tmp_path / "a.wav").write_bytes(WAV)
    (tmp_path / "a.txt").write_text("not audio")
    options: dict[str, Any] = {"audio_root": str(tmp_path)} if root else {}
    async with running(**options) as (vllm, url):
        answer = await caller.responses(url, {"input": "hi", "metadata": metadata})
        assert vllm.log.count() == 0
    assert answer.status == 422, answer.text
    assert answer.body["error"]["param"] == param and words in answer.body["error"]["message"]


async def test_without_audio_keys_the_request_is_untouched(caller: Caller) -> None:
    async with running() as (vllm, url):
        await caller.responses(url, {"input": "hi", "metadata": {"task": "t1", "audio_data": ""}})
        sent = vllm.log.last_body()
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["metadata"] == {"task": "t1", "audio_data": ""}


# --- configuration ------------------------------------------------------------------------------------------


def nemo_gym_section(name: str) -> dict[str, Any]:
    section: dict[str, Any] = yaml.safe_load((NEMO_GYM_CONFIGS / f"{name}.yaml").read_text())["policy_model"][
        "responses_api_models"
    ]["vllm_model"]
    return section


@pytest.mark.parametrize("name", ["vllm_model", "vllm_model_for_training", "vllm_model_completions"])
def test_nemo_gym_configs_are_accepted_with_their_meaning(name: str) -> None:
    section = nemo_gym_section(name)
    substituted = {
        key: {
            "${policy_base_url}": "http://127.0.0.1:9/v1",
            "${policy_api_key}": "k",
            "${policy_model_name}": MODEL,
        }.get(value, value)
        if isinstance(value, str)
        else value
        for key, value in section.items()
    }
    config = {"policy_model": {"responses_api_models": {"vllm_model": substituted}}}
    server = VllmModel.from_config(config, "policy_model")
    assert server.config.model == MODEL
    for key, value in section.items():
        if not (isinstance(value, str) and value.startswith("${")) and key != "api_key":
            assert getattr(server.config, key) == value, key
    completions = name == "vllm_model_completions"
    assert (server.completions is not None) is completions
    assert server.options.tokens.enabled is (name == "vllm_model_for_training")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"is_responses_native": True, "return_token_id_information": True}, "return_token_id_information"),
        ({"is_responses_native": True, "replace_developer_role_with_system": True}, "replace_developer_role"),
        ({"is_responses_native": True, "sequential_reasoning_allowed": False}, "sequential_reasoning_allowed"),
        ({"render_chat_template": True}, "use_completions_api"),
        ({"use_completions_api": True, "tokenizer": "Qwen/Qwen2.5-7B-Instruct"}, "render_chat_template"),
        ({"audio_root": "/no/such/audio/root"}, "audio_root"),
        (
            {"use_completions_api": True, "return_token_id_information": True, "token_exact": "require"},
            "token_exact",
        ),
        ({"uses_interleaved_reasoning": "sometimes"}, "uses_interleaved_reasoning"),
    ],
)
def test_combinations_nemo_gym_cannot_honour_are_refused_naming_the_key(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        VllmModel.from_config(model_config("http://127.0.0.1:9/v1", **options), "policy_model")
    assert words in str(refused.value)
