"""Completions mode (`use_completions_api: true`) in front of the vLLM stand-in: raw prompts and their rules,
prompts rendered by vLLM's chat template (the served one or `tokenizer`'s), token data as NeMo Gym returns it,
and the start-up checks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ngym.servers.base import StartupError
from responses_api_models.vllm_model.app import VllmModel
from responses_api_models.vllm_model.tests.test_app import (
    CHAT_WEATHER_TOOL,
    MODEL,
    WEATHER_TOOL,
    Caller,
    model_config,
    running,
    texts,
)
from testkit.standin.script import HttpFault, StandinScript, context_length_error
from testkit.standin.server import StandinServer
from testkit.standin.wire import EOS_ID, fake_tokenize, render_chat

COMPLETIONS = "/v1/completions"
TEXT_PART = {"type": "text", "text": "2+2?"}
USER = {"role": "user", "content": "a"}
SYSTEM = {"role": "system", "content": "s"}
RAW: dict[str, Any] = {"use_completions_api": True}
RENDER: dict[str, Any] = {"use_completions_api": True, "render_chat_template": True}


@pytest.fixture
async def caller() -> AsyncIterator[Caller]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield Caller(http)


async def test_raw_prompts_are_the_callers_text_as_is(caller: Caller) -> None:
    script = StandinScript(completion_text=" 4")
    async with running(script, **RAW, extra_body={"min_p": 0.1}, sampling_overrides={"seed": 5}) as (vllm, url):
        responses = await caller.responses(
            url, {"model": "x", "instructions": "Answer tersely.", "input": "2+2?", "max_output_tokens": 8, "top_k": 3}
        )
        chat = await caller.chat(
            url,
            {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Q: "}, TEXT_PART]}],
                "max_completion_tokens": 9,
                "stop": ["\n"],
            },
        )
        sent_responses, sent_chat = vllm.log.bodies(COMPLETIONS)
        assert vllm.log.count() == 0  # nothing went to /v1/chat/completions
    assert responses.status == 200, responses.text
    assert texts(responses.body) == [" 4"] and responses.body["status"] == "completed"
    assert sent_responses == {
        "model": MODEL,
        "prompt": "Answer tersely.\n\n2+2?",
        "max_tokens": 8,
        "top_k": 3,
        "min_p": 0.1,
        "seed": 5,
    }
    assert chat.status == 200, chat.text
    assert chat.body["choices"][0]["message"]["content"] == " 4"
    assert chat.body["choices"][0]["finish_reason"] == "stop"
    assert sent_chat["prompt"] == "Q: 2+2?" and sent_chat["max_tokens"] == 9 and sent_chat["stop"] == ["\n"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": [USER, {"role": "assistant", "content": "b"}]}, "messages", "[system, user]"),
        (
            {"messages": [SYSTEM, USER, USER]},
            "messages",
            "at most one system and one user",
        ),
        ({"messages": [SYSTEM]}, "messages[0].role", "needs a user message"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
            "messages[0].content[0]",
            "text-only",
        ),
        ({"messages": [USER], "tools": [CHAT_WEATHER_TOOL]}, "tools", "render_chat_template"),
        (
            {"messages": [{"role": "user", "content": "a"}], "metadata": {"audio_data": "data:audio/wav;base64,AA=="}},
            "metadata.audio_data",
            "text-only",
        ),
    ],
    ids=["assistant-turn", "three-messages", "lone-system", "image", "tools", "audio"],
)
async def test_raw_mode_refuses_what_it_cannot_send_naming_the_field(
    caller: Caller, body: dict[str, Any], param: str, words: str
) -> None:
    async with running(**RAW) as (vllm, url):
        answer = await caller.chat(url, body)
        assert vllm.log.count(COMPLETIONS) == 0
    assert answer.status == 422, answer.text
    assert answer.body["error"]["param"] == param and words in answer.body["error"]["message"]


async def test_token_data_in_completions_mode_warns_once_that_it_is_not_token_exact(
    caller: Caller, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running(**RAW, return_token_id_information=True) as (_vllm, url):
        await caller.chat(url, {"messages": [{"role": "user", "content": "2+2?"}]})
    warning = capsys.readouterr().err
    assert warning.count("warning:") == 1 and "use_completions_api: true" in warning and "token-exact" in warning
    async with running(**RAW, return_token_id_information=True, token_exact="never") as (_vllm, url):
        await caller.chat(url, {"messages": [{"role": "user", "content": "2+2?"}]})
    assert "warning:" not in capsys.readouterr().err


async def test_token_data_in_completions_mode_is_vllms_ids_and_log_probs(caller: Caller) -> None:
    script = StandinScript(completion_text=" 4")
    async with running(script, **RAW, return_token_id_information=True) as (vllm, url):
        responses = await caller.responses(url, {"input": "2+2?"})
        chat = await caller.chat(url, {"messages": [{"role": "user", "content": "2+2?"}]})
        sent = vllm.log.bodies(COMPLETIONS)
        assert vllm.log.count("/tokenize") == 0  # the IDs came inline
    for body in sent:
        assert (body["logprobs"], body["return_token_ids"], body["return_tokens_as_token_ids"]) == (0, True, True)
    generated = [*fake_tokenize(" 4"), EOS_ID]
    item = responses.body["output"][-1]
    assert item["prompt_token_ids"] == fake_tokenize("2+2?")
    assert item["generation_token_ids"] == generated and len(item["generation_log_probs"]) == len(generated)
    message = chat.body["choices"][0]["message"]
    assert message["content"] == " 4" and message["generation_token_ids"] == generated
    assert message["prompt_token_ids"] == fake_tokenize("2+2?")


async def test_prompt_ids_come_from_tokenize_when_vllm_leaves_them_out(caller: Caller) -> None:
    answer = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "text": "ok",
                "finish_reason": "stop",
                "logprobs": {"tokens": ["token_id:111", "token_id:107"], "token_logprobs": [-0.1, -0.2]},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    options: dict[str, Any] = {**RAW, "return_token_id_information": True, "extra_body": {"add_special_tokens": False}}
    async with running(**options) as (vllm, url):
        vllm.script.inject(HttpFault(200, answer))
        reply = await caller.responses(url, {"input": "hello"})
        tokenized = vllm.log.bodies("/tokenize")
    assert reply.status == 200, reply.text
    item = reply.body["output"][-1]
    assert (item["generation_token_ids"], item["generation_log_probs"]) == ([111, 107], [-0.1, -0.2])
    assert item["prompt_token_ids"] == fake_tokenize("hello")
    assert tokenized == [{"model": MODEL, "prompt": "hello", "add_special_tokens": False}]


async def test_missing_log_probs_in_training_mode_are_a_502_not_silent_zeros(caller: Caller) -> None:
    answer = {"id": "c", "object": "text_completion", "model": MODEL, "choices": [{"index": 0, "text": "ok",
              "finish_reason": "stop", "logprobs": None, "token_ids": [1], "prompt_token_ids": [2]}]}  # fmt: skip
    async with running(**RAW, return_token_id_information=True) as (vllm, url):
        vllm.script.inject(HttpFault(200, answer))
        reply = await caller.responses(url, {"input": "hello"})
    assert reply.status == 502 and "logprobs" in reply.body["error"]["message"]


async def test_think_in_completion_text_follows_the_reasoning_parser_setting(caller: Caller) -> None:
    script = StandinScript(completion_text="<think>Add.</think> 4")
    async with running(script, **RAW) as (_vllm, url):
        parsed = await caller.responses(url, {"input": "2+2?"})
    async with running(script, **RAW, uses_reasoning_parser=False) as (_vllm, url):
        inline = await caller.responses(url, {"input": "2+2?"})
    assert [item["type"] for item in parsed.body["output"]] == ["reasoning", "message"]
    assert parsed.body["output"][0]["summary"][0]["text"] == "Add." and texts(parsed.body) == [" 4"]
    assert texts(inline.body) == ["<think>Add.</think> 4"]


async def test_context_overflow_and_max_tokens_in_completions_mode(caller: Caller) -> None:
    async with running(StandinScript(completion_text=" four plus nothing"), **RAW) as (vllm, url):
        vllm.script.inject(context_length_error())
        overflow = await caller.responses(url, {"input": "long"})
        cut = await caller.responses(url, {"input": "2+2?", "max_output_tokens": 3})
    assert overflow.status == 200 and overflow.body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut.body["status"] == "incomplete" and texts(cut.body) == [" fo"]


# --- render_chat_template ----------------------------------------------------------------------------------------


async def test_rendered_prompts_are_vllms_chat_template_as_token_ids(caller: Caller) -> None:
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking."},
        {"role": "user", "content": "In SF."},
    ]
    options: dict[str, Any] = {
        **RENDER,
        "chat_template_kwargs": {"enable_thinking": False},
        "return_token_id_information": True,
    }
    async with running(StandinScript(completion_text="Sunny."), **options) as (vllm, url):
        answer = await caller.chat(url, {"messages": history, "tools": [CHAT_WEATHER_TOOL]})
        rendered = vllm.log.bodies("/tokenize")[-1]
        sent = vllm.log.last_body(COMPLETIONS)
    assert answer.status == 200, answer.text
    assert rendered == {
        "model": MODEL,
        "messages": history,
        "add_generation_prompt": True,
        "tools": [CHAT_WEATHER_TOOL],
        "chat_template_kwargs": {"enable_thinking": False},
    }
    expected = fake_tokenize(render_chat(history, [CHAT_WEATHER_TOOL]))
    assert sent["prompt"] == expected and "messages" not in sent and "tools" not in sent
    message = answer.body["choices"][0]["message"]
    assert message["content"] == "Sunny." and message["prompt_token_ids"] == expected


async def test_rendered_prompts_still_need_text(caller: Caller) -> None:
    image = {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}
    async with running(**RENDER) as (vllm, url):
        answer = await caller.responses(url, {"input": [image], "tools": [WEATHER_TOOL]})
        assert vllm.log.count(COMPLETIONS) == 0
    assert answer.status == 422 and answer.body["error"]["param"] == "messages[0].content[0]"


def write_tokenizer(directory: Path, template: str | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"tokenizer_class": "Qwen2Tokenizer"}
    if template is not None:
        config["chat_template"] = template
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


async def test_tokenizer_lends_its_chat_template(caller: Caller, tmp_path: Path) -> None:
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant] "
    tokenizer = write_tokenizer(tmp_path / "instruct", template)
    async with running(**RENDER, tokenizer=str(tokenizer)) as (vllm, url):
        answer = await caller.responses(url, {"input": "hi"})
        rendered = vllm.log.bodies("/tokenize")
    assert answer.status == 200, answer.text
    # The start-up probe and the request both render with the lent template.
    assert [body["chat_template"] for body in rendered] == [template, template]


async def test_tokenizer_from_the_hugging_face_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "hub" / "models--org--instruct" / "snapshots" / "abc123"
    (snapshot).mkdir(parents=True)
    (snapshot / "chat_template.jinja").write_text("{{ messages[0].content }}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    async with running(**RENDER, tokenizer="org/instruct") as (vllm, _url):
        assert vllm.log.last_body("/tokenize")["chat_template"] == "{{ messages[0].content }}"


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no-template", "has no chat template"),
        ("not-found", "neither a local directory nor in the Hugging Face cache"),
        ("untrusted", "--trust-request-chat-template"),
    ],
)
async def test_render_start_up_checks_name_the_problem(
    case: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    tokenizer = {
        "no-template": str(write_tokenizer(tmp_path / "base", None)),
        "not-found": "org/not-downloaded",
        "untrusted": str(write_tokenizer(tmp_path / "instruct", "{{ messages }}")),
    }[case]
    script = StandinScript(trust_request_chat_template=case != "untrusted")
    async with StandinServer(script) as vllm:
        server = VllmModel.from_config(model_config(vllm.base_url, **RENDER, tokenizer=tokenizer), "policy_model")
        with pytest.raises(StartupError) as refused:
            await server.open()
    assert words in str(refused.value)
