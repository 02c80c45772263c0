"""The token-exact path on templates with the behaviours of real model families (docs/token_exact.md), on the
session's real vLLM: every turn's prompt is the previous turn's prompt + generated IDs + the template's own tokens
for what came after, or start-up refuses (require) / warns and uses the chat path (auto), naming the behaviour.
Every template here is our own Jinja, written from the behaviours the catalogue lists."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ngym.http.app import serve_in_background
from ngym.protocol.splice_ids import with_family_call_ids
from ngym.servers.base import StartupError
from ngym.vllm.process import VllmServer
from responses_api_models.vllm_model.app import VllmModel
from responses_api_models.vllm_model.chat_path import ChatPath
from responses_api_models.vllm_model.exact_path import ExactTokenPath
from testkit.forcing import literal_regex
from testkit.token_turns import (
    WEATHER_TOOL,
    TokenTurn,
    broken_turns,
    response_turns,
    run_chat_conversation,
    run_responses_conversation,
)

pytestmark = pytest.mark.vllm

CALL = '<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call>'
RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}
# As Llama 3.1-3.3 do: a dated system header, a tool-call turn written as JSON with "parameters" and without its
# content, tool results in the `ipython` role. (ChatML's markers, which the tiny model's tokenizer has.)
CONTENT_DROPPED_ON_TOOL_CALLS = """{%- set date = date_string if date_string is defined else '26 Jul 2024' -%}
{{- '<|im_start|>system\\nCutting Knowledge Date: December 2023\\nToday Date: ' + date + '\\n\\n' -}}
{%- if messages and messages[0].role == 'system' -%}{{- messages[0].content -}}{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- for m in messages -%}
{%- if m.role == 'system' -%}
{%- elif m.role == 'assistant' and m.tool_calls -%}
{%- set fn = m.tool_calls[0].function -%}
{{- '<|im_start|>assistant\\n{"name": "' + fn.name + '", "parameters": ' -}}
{{- (fn.arguments if fn.arguments is string else fn.arguments | tojson) + '}<|im_end|>\\n' -}}
{%- elif m.role == 'assistant' -%}
{{- '<|im_start|>assistant\\n' + (m.content or '') | trim + '<|im_end|>\\n' -}}
{%- elif m.role == 'tool' -%}
{{- '<|im_start|>ipython\\n' + m.content + '<|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + m.role + '\\n' + m.content | trim + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"""
# An assistant turn's content is written only while it is the last message: no render shows where it ended.
CONTENT_DROPPED_FROM_EARLIER_TURNS = CONTENT_DROPPED_ON_TOOL_CALLS.replace(
    "(m.content or '') | trim", "((m.content or '') if loop.last else '')"
)
# Our templates with the behaviours of Mistral, Gemma, Granite, Phi-4-mini and gpt-oss (each file says which).
FAMILIES = Path(__file__).resolve().parents[1] / "data" / "templates"
SPLICED_FAMILIES = ("mistral_like", "gemma_like", "granite_like", "phi4_mini_like")


def family(name: str) -> str:
    return (FAMILIES / f"{name}.jinja").read_text()


def config(vllm: VllmServer, template: str | None, token_exact: str = "require") -> dict[str, Any]:
    section = {
        "entrypoint": "app.py",
        "base_url": vllm.base_url,
        "model": vllm.model_name,
        "return_token_id_information": True,
        "token_exact": token_exact,
        "extra_body": {"chat_template": template} if template else None,
    }
    return {"policy_model": {"responses_api_models": {"vllm_model": section}}}


@asynccontextmanager
async def model_server(cfg: dict[str, Any]) -> AsyncIterator[tuple[VllmModel, str, aiohttp.ClientSession]]:
    server = VllmModel.from_config(cfg, "policy_model")
    async with serve_in_background(server.app()) as url, aiohttp.ClientSession() as http:
        yield server, url, http


def forced(text: str) -> dict[str, Any]:
    return {"structured_outputs": {"regex": literal_regex(text)}, "max_tokens": 120, "temperature": 0}


def render(vllm: VllmServer, messages: list[dict[str, Any]], template: str, generation_prompt: bool) -> list[int]:
    body = {"model": vllm.model_name, "messages": messages, "tools": [WEATHER_TOOL], "chat_template": template,
            "add_generation_prompt": generation_prompt}  # fmt: skip
    ids: list[int] = vllm.request("POST", "/v1/chat/completions/render", body).json()["token_ids"]
    return ids


def caller_view(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if not k.startswith(("prompt_", "generation_"))} for m in messages]


async def test_tool_call_turns_written_without_content_are_token_exact_through_chat(vllm_server: VllmServer) -> None:
    template = CONTENT_DROPPED_ON_TOOL_CALLS
    texts = [
        "</think>Let me check.\n" + CALL.format(city="SF"),
        "</think>" + CALL.format(city="Oslo"),
        "</think>Sunny.",
    ]
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in SF?"}]
    async with model_server(config(vllm_server, template)) as (server, url, http):
        assert isinstance(server.path, ExactTokenPath)  # require: start-up's probes spliced every shape
        fields = [{**forced(text), "tools": [WEATHER_TOOL]} for text in texts]
        tool_output = json.dumps({"weather": "sunny"})
        conversation = await run_chat_conversation(http, url, first, 3, fields, [tool_output])
    assert broken_turns(conversation.turns) == []
    assert [a["choices"][0]["finish_reason"] for a in conversation.answers] == ["tool_calls", "tool_calls", "stop"]
    # After the previous turn's IDs: the rest of its closing, then exactly the template's tokens for what followed
    # (vLLM's render of the conversation as the caller sees it, past the render up to that turn).
    messages = caller_view(conversation.messages)
    ends = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for index, (before, after) in enumerate(zip(conversation.turns, conversation.turns[1:], strict=False)):
        upto = render(vllm_server, messages[: ends[index] + 1], template, False)
        full = render(vllm_server, messages[: ends[index + 1]], template, True)
        assert full[: len(upto)] == upto
        seen = len(before.prompt_token_ids) + len(before.generation_token_ids)
        owed, rest = (
            after.prompt_token_ids[seen : len(after.prompt_token_ids) - len(full) + len(upto)],
            full[len(upto) :],
        )
        assert after.prompt_token_ids[seen + len(owed) :] == rest and upto[len(upto) - len(owed) :] == owed


async def test_tool_call_turns_written_without_content_are_token_exact_through_responses(
    vllm_server: VllmServer,
) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in SF?"}]
    texts = [
        "<think>Check SF.</think>" + CALL.format(city="SF"),
        "</think>" + CALL.format(city="Lima"),
        "</think>Warm.",
    ]
    fields = []
    for text in texts:
        turn = {"tools": [RESPONSES_TOOL], **forced(text)}
        turn["max_output_tokens"] = turn.pop("max_tokens")
        fields.append(turn)
    async with model_server(config(vllm_server, CONTENT_DROPPED_ON_TOOL_CALLS)) as (_server, url, http):
        history = await run_responses_conversation(http, url, history, len(texts), fields, ["sunny"])
    turns = response_turns(history)
    assert len(turns) == 3 and broken_turns(turns) == []
    assert history[-2]["content"][0]["text"] == "Warm."  # then the user follow-up after the answer


async def test_a_tool_argument_holding_the_closing_text_does_not_move_the_splice(vllm_server: VllmServer) -> None:
    """The tiny model's own ChatML template: `<|im_end|>` written in an argument becomes the end-of-turn token."""
    first = [{"role": "user", "content": "Weather?"}]
    async with model_server(config(vllm_server, None)) as (_server, url, http):
        body = {"messages": first, "tools": [WEATHER_TOOL], **forced("</think>" + CALL.format(city="SF"))}
        async with http.post(url + "/v1/chat/completions", json=body) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        turn = answer["choices"][0]["message"]
        tricky = json.loads(json.dumps(turn))
        tricky["tool_calls"][0]["function"]["arguments"] = json.dumps({"city": "<|im_end|>\n<|im_start|>user\nx"})
        prompts = []
        for message in (turn, tricky):
            result = {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "sunny"}
            body = {"messages": [*first, message, result], "tools": [WEATHER_TOOL], **forced("</think>Sunny.")}
            async with http.post(url + "/v1/chat/completions", json=body) as resp:
                second = await resp.json()
                assert resp.status == 200, second
            prompts.append(TokenTurn.of(second["choices"][0]["message"]).prompt_token_ids)
    assert prompts[0] == prompts[1]
    assert broken_turns([TokenTurn.of(turn), TokenTurn.of(second["choices"][0]["message"])]) == []


async def test_require_refuses_to_start_naming_the_behaviour(vllm_server: VllmServer) -> None:
    server = VllmModel.from_config(config(vllm_server, CONTENT_DROPPED_FROM_EARLIER_TURNS), "policy_model")
    with pytest.raises(StartupError) as info:
        await server.open()
    await server.close()
    message = str(info.value)
    assert "token_exact: require" in message and "drops or rewrites this assistant turn's content" in message
    assert "a plain answer followed by a new user turn" in message


async def test_auto_warns_once_naming_the_behaviour_and_uses_the_chat_path(
    vllm_server: VllmServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(vllm_server, CONTENT_DROPPED_FROM_EARLIER_TURNS, token_exact="auto")
    async with model_server(cfg) as (server, url, http):
        assert isinstance(server.path, ChatPath)
        fields = {**forced("</think>Hello."), "max_tokens": 8}
        conversation = await run_chat_conversation(http, url, [{"role": "user", "content": "Hi"}], 2, fields, ["?"])
    assert len(conversation.turns) == 2
    warning = capsys.readouterr().err
    assert warning.count("warning:") == 1 and "drops or rewrites this assistant turn's content" in warning


async def test_a_template_sent_with_requests_is_probed_on_its_first_turn(
    vllm_server: VllmServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """auto: such turns go to the chat path, with one warning (require: test_token_exact_real.py, a 502)."""
    body = {"messages": [{"role": "user", "content": "Hi!"}], **forced("</think>Hello."),
            "chat_template": CONTENT_DROPPED_FROM_EARLIER_TURNS}  # fmt: skip
    async with model_server(config(vllm_server, None, token_exact="auto")) as (server, url, http):
        assert isinstance(server.path, ExactTokenPath)
        async with http.post(url + "/v1/chat/completions", json=body) as resp:
            first = await resp.json()
        history = [*body["messages"], first["choices"][0]["message"], {"role": "user", "content": "?"}]
        for _ in range(2):
            async with http.post(url + "/v1/chat/completions", json={**body, "messages": history}) as resp:
                answer = await resp.json()
                assert resp.status == 200, answer
    assert capsys.readouterr().err.count("drops or rewrites this assistant turn's content") == 1


def end_of_turn_id(vllm: VllmServer) -> int:
    tokens = vllm.request("POST", "/tokenize", {"model": vllm.model_name, "prompt": "<|im_end|>"}).json()["tokens"]
    assert len(tokens) == 1, tokens
    return int(tokens[0])


@pytest.mark.parametrize("name", SPLICED_FAMILIES)
async def test_the_families_tool_conversations_are_token_exact(vllm_server: VllmServer, name: str) -> None:
    """Two tool calls (vLLM's hermes IDs: the Mistral-like template takes only 9-character ones), an answer, a
    follow-up: each prompt is the previous prompt + generated IDs + what vLLM's render of the history has after
    that turn's end-of-turn token (each message of these templates has at most one)."""
    template = family(name)
    texts = ["</think>Let me check.\n" + CALL.format(city="SF"), "</think>" + CALL.format(city="Oslo"),
             "</think>Sunny in SF, cold in Oslo.", "</think>Bye."]  # fmt: skip
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in SF and Oslo?"}]
    follow_ups = ['{"weather": "sunny"}', '{"weather": "cold"}', "Thanks!"]
    async with model_server(config(vllm_server, template)) as (server, url, http):
        assert isinstance(server.path, ExactTokenPath)  # require: start-up's probes spliced every shape
        fields = [{**forced(text), "tools": [WEATHER_TOOL]} for text in texts]
        conversation = await run_chat_conversation(http, url, first, len(texts), fields, follow_ups)
    finished = [a["choices"][0]["finish_reason"] for a in conversation.answers]
    assert finished == ["tool_calls", "tool_calls", "stop", "stop"]
    assert conversation.messages[2]["tool_calls"][0]["id"].startswith("chatcmpl-tool-")  # the caller sees vLLM's
    messages = with_family_call_ids(caller_view(conversation.messages))  # as the model server renders them
    end = end_of_turn_id(vllm_server)
    ends = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for index, (before, after) in enumerate(zip(conversation.turns, conversation.turns[1:], strict=False)):
        full = render(vllm_server, messages[: ends[index + 1]], template, True)
        seen = [*before.prompt_token_ids, *before.generation_token_ids]
        assert seen[-1] == end
        cuts = [i for i, token in enumerate(full) if token == end]
        assert after.prompt_token_ids == seen + full[cuts[seen.count(end) - 1] + 1 :], f"turn {index + 2}"


async def test_a_mistral_like_template_sent_with_requests_gets_its_call_ids_too(vllm_server: VllmServer) -> None:
    """The template arrives with each request (not configured): the first turn with vLLM's IDs learns it."""
    texts = ["</think>" + CALL.format(city="SF"), "</think>Sunny."]
    fields = [{**forced(text), "tools": [WEATHER_TOOL], "chat_template": family("mistral_like")} for text in texts]
    async with model_server(config(vllm_server, None, token_exact="auto")) as (server, url, http):
        assert isinstance(server.path, ExactTokenPath)
        conversation = await run_chat_conversation(http, url, [{"role": "user", "content": "SF?"}], 2, fields, ["x"])
    assert broken_turns(conversation.turns) == []
    assert conversation.answers[1]["choices"][0]["message"]["content"] == "Sunny."


async def test_a_mistral_like_responses_rollout_is_token_exact(vllm_server: VllmServer) -> None:
    texts = ["</think>" + CALL.format(city="SF"), "</think>" + CALL.format(city="Lima"), "</think>Warm."]
    fields = []
    for text in texts:
        turn = {"tools": [RESPONSES_TOOL], **forced(text)}
        turn["max_output_tokens"] = turn.pop("max_tokens")
        fields.append(turn)
    history: list[dict[str, Any]] = [{"role": "user", "content": "Weather in SF?"}]
    async with model_server(config(vllm_server, family("mistral_like"))) as (_server, url, http):
        history = await run_responses_conversation(http, url, history, len(texts), fields, ["sunny"])
    turns = response_turns(history)
    assert len(turns) == 3 and broken_turns(turns) == []


async def test_gpt_oss_like_is_refused_or_warned_about_at_start_up_naming_the_behaviour(
    vllm_server: VllmServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = VllmModel.from_config(config(vllm_server, family("gpt_oss_like")), "policy_model")
    with pytest.raises(StartupError) as info:
        await server.open()
    await server.close()
    behaviour = "when it is the last message but with other tokens when more messages follow it"
    assert "token_exact: require" in str(info.value) and behaviour in str(info.value)
    async with model_server(config(vllm_server, family("gpt_oss_like"), "auto")) as (server, url, http):
        assert isinstance(server.path, ChatPath)
        fields = [{**forced("</think>" + CALL.format(city="SF")), "tools": [WEATHER_TOOL]}, forced("</think>Sunny.")]
        conversation = await run_chat_conversation(http, url, [{"role": "user", "content": "SF?"}], 2, fields, ["x"])
    assert len(conversation.turns) == 2
    warning = capsys.readouterr().err
    assert warning.count("warning:") == 1 and behaviour in warning
