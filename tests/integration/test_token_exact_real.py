"""The token-exact path against real vLLM (--enable-scale-out): every turn's prompt begins with the previous
turn's prompt + generated IDs, and the generated IDs and log-probs are vLLM's own.

The tiny model is a byte-level BPE model with random weights: unforced, it writes anything (the hardest case for
re-tokenising); structured outputs make it write exactly the tool calls and reasoning a test needs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ngym.http.app import serve_in_background
from ngym.vllm.process import VllmServer
from responses_api_models.vllm_model.app import VllmModel
from responses_api_models.vllm_model.exact_path import ExactTokenPath
from testkit.forcing import literal_regex
from testkit.token_turns import (
    FOLLOW_UPS,
    QUESTIONS,
    WEATHER_TOOL,
    TokenTurn,
    broken_turns,
    response_turns,
    run_chat_conversation,
    run_responses_conversation,
)

pytestmark = pytest.mark.vllm

TOOL_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call>'
TOOL_OUTPUT = json.dumps({"city": "SF", "weather_description": "The weather in SF is sunny."})
RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# The tiny model's template, changed as Qwen3's is: reasoning of turns before the last user message is dropped.
DROPS_OLD_REASONING = """{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in messages -%}
{%- if m.role == 'assistant' -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if loop.index0 > ns.last_user and m.reasoning_content -%}{{- '<think>' + m.reasoning_content + '</think>' -}}
{%- endif -%}
{{- (m.content or '') + '<|im_end|>\\n' -}}
{%- else -%}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"""
# A template that writes an assistant turn's content only when it is the last message: nothing to cut at.
DROPS_OLD_CONTENT = DROPS_OLD_REASONING.replace("(m.content or '')", "((m.content or '') if loop.last else '')")


CONVERSATIONS = [
    json.loads(line)
    for line in (Path(__file__).parents[1] / "data/token_exact/conversations.jsonl").read_text().splitlines()
]


def exact_config(vllm: VllmServer, **settings: Any) -> dict[str, Any]:
    section = {
        "entrypoint": "app.py",
        "base_url": vllm.base_url,
        "model": vllm.model_name,
        "return_token_id_information": True,
        "token_exact": "require",
        **settings,
    }
    return {"policy_model": {"responses_api_models": {"vllm_model": section}}}


@asynccontextmanager
async def exact_server(config: dict[str, Any]) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    server = VllmModel.from_config(config, "policy_model")
    async with serve_in_background(server.app()) as url, aiohttp.ClientSession() as http:
        wanted = config["policy_model"]["responses_api_models"]["vllm_model"]["token_exact"] != "never"
        assert isinstance(server.path, ExactTokenPath) == wanted
        yield url, http


def forced(text: str, max_tokens: int = 200) -> dict[str, Any]:
    return {"structured_outputs": {"regex": literal_regex(text)}, "max_tokens": max_tokens, "temperature": 0}


def token_id(vllm: VllmServer, text: str) -> int:
    tokens = vllm.request("POST", "/tokenize", {"model": vllm.model_name, "prompt": text}).json()["tokens"]
    assert len(tokens) == 1, tokens
    return int(tokens[0])


async def test_free_text_cut_by_max_tokens_at_temperature_1(vllm_server: VllmServer) -> None:
    im_end = token_id(vllm_server, "<|im_end|>")
    async with exact_server(exact_config(vllm_server)) as (url, http):
        conversations = await asyncio.gather(
            *(
                run_chat_conversation(
                    http,
                    url,
                    [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
                    3,
                    {"max_tokens": 6 + index % 5, "temperature": 1.0, "tools": [WEATHER_TOOL] if index % 2 else None},
                    FOLLOW_UPS[index % 4 :] + FOLLOW_UPS[: index % 4],
                )
                for index in range(12)
            )
        )
    for conversation in conversations:
        assert broken_turns(conversation.turns) == [], conversation.messages
        turns = conversation.turns
        for before, after, answer in zip(turns, turns[1:], conversation.answers, strict=False):
            seen = len(before.prompt_token_ids) + len(before.generation_token_ids)
            if answer["choices"][0]["finish_reason"] == "length":
                # ngym closes the cut turn, once, in the next prompt; the generation itself is untouched.
                assert after.prompt_token_ids[seen] == im_end
                assert im_end not in before.generation_token_ids[-1:]
            assert len(before.generation_token_ids) == len(before.generation_log_probs)


async def test_tool_calls_and_reasoning_through_chat_completions(vllm_server: VllmServer) -> None:
    im_end = token_id(vllm_server, "<|im_end|>")
    texts = ["<think>The user wants the weather.</think>" + TOOL_CALL, "</think>" + TOOL_CALL, "</think>It is sunny."]
    async with exact_server(exact_config(vllm_server)) as (url, http):
        conversation = await run_chat_conversation(
            http,
            url,
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in SF?"}],
            3,
            [{**forced(text), "tools": [WEATHER_TOOL]} for text in texts],
            [TOOL_OUTPUT],
        )
    assert broken_turns(conversation.turns) == []
    first, second, third = (answer["choices"][0] for answer in conversation.answers)
    assert first["message"]["content"] == "<think>The user wants the weather.</think>"
    assert [c["function"]["name"] for c in first["message"]["tool_calls"]] == ["get_weather"]
    assert json.loads(second["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "SF"}
    assert first["finish_reason"] == second["finish_reason"] == "tool_calls"
    assert third["message"]["content"] == "It is sunny." and third["finish_reason"] == "stop"
    for turn, after in zip(conversation.turns, conversation.turns[1:], strict=False):
        # It stopped on <|im_end|>: the next prompt does not get a second one.
        assert turn.generation_token_ids[-1] == im_end
        assert after.prompt_token_ids[len(turn.prompt_token_ids) + len(turn.generation_token_ids)] != im_end


async def test_responses_rollout_with_reasoning_and_tool_calls(vllm_server: VllmServer) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in SF?"}]
    texts = ["<think>Check SF.</think>" + TOOL_CALL, "<think>Again.</think>" + TOOL_CALL, "</think>Sunny in SF."]
    async with exact_server(exact_config(vllm_server)) as (url, http):
        for text in texts:
            body = {"input": history, "tools": [RESPONSES_TOOL], **forced(text)}
            body["max_output_tokens"] = body.pop("max_tokens")
            async with http.post(url + "/v1/responses", json=body) as resp:
                answer = await resp.json()
                assert resp.status == 200, answer
            history += answer["output"]
            history += [
                {"type": "function_call_output", "call_id": item["call_id"], "output": TOOL_OUTPUT}
                for item in answer["output"]
                if item["type"] == "function_call"
            ]
    turns = response_turns(history)
    assert len(turns) == 3 and broken_turns(turns) == []
    kinds = [item["type"] for item in history if item.get("role") != "user"]
    assert kinds[:3] == ["reasoning", "function_call", "function_call_output"]
    assert history[-1]["content"][0]["text"] == "Sunny in SF."


async def test_greedy_generation_equals_a_direct_vllm_call(vllm_server: VllmServer) -> None:
    messages = [{"role": "user", "content": "Tell me about the weather."}]
    fields = {"max_tokens": 12, "temperature": 0}
    async with exact_server(exact_config(vllm_server)) as (url, http):
        conversation = await run_chat_conversation(http, url, messages, 2, fields, ["More, please."])
    first, second = conversation.turns
    direct = vllm_server.request("POST", "/v1/chat/completions", {
        "model": vllm_server.model_name, "messages": messages, **fields, "logprobs": True, "top_logprobs": 0,
        "return_token_ids": True}).json()  # fmt: skip
    assert direct["prompt_token_ids"] == first.prompt_token_ids
    assert direct["choices"][0]["token_ids"] == first.generation_token_ids
    direct_log_probs = [entry["logprob"] for entry in direct["choices"][0]["logprobs"]["content"]]
    assert first.generation_log_probs == pytest.approx(direct_log_probs, abs=1e-4)
    # The second turn, generated straight from its spliced prompt.
    render = {"model": vllm_server.model_name, "messages": messages, **fields, "logprobs": True, "top_logprobs": 0}
    rendered = vllm_server.request("POST", "/v1/chat/completions/render", render).json()
    # A first turn is one chat completion: its prompt is what render makes of the conversation.
    assert rendered["token_ids"] == first.prompt_token_ids
    rendered["token_ids"] = second.prompt_token_ids
    generated = vllm_server.request("POST", "/inference/v1/generate", rendered).json()["choices"][0]
    assert generated["token_ids"] == second.generation_token_ids
    direct_log_probs = [entry["logprob"] for entry in generated["logprobs"]["content"]]
    assert second.generation_log_probs == pytest.approx(direct_log_probs, abs=1e-4)


async def test_a_template_that_drops_old_reasoning_keeps_the_tokens_the_model_saw(vllm_server: VllmServer) -> None:
    texts = ["<think>First thought.</think>Hello there.", "<think>Second.</think>Fine.", "</think>Bye."]
    fields = [{**forced(text), "chat_template": DROPS_OLD_REASONING} for text in texts]
    first = [{"role": "user", "content": "Hi!"}]
    async with exact_server(exact_config(vllm_server)) as (url, http):
        exact = await run_chat_conversation(http, url, first, 3, fields, ["How are you?"])
    async with exact_server(exact_config(vllm_server, token_exact="never")) as (url, http):
        rerendered = await run_chat_conversation(http, url, first, 3, fields, ["How are you?"])
    assert broken_turns(exact.turns) == []
    assert exact.answers[0]["choices"][0]["message"]["content"] == "<think>First thought.</think>Hello there."
    # What the chat path cannot do: vLLM re-renders the history without the old reasoning.
    assert broken_turns(rerendered.turns) == [1, 2]


async def test_a_template_that_cannot_be_cut_is_the_model_servers_error_naming_it(vllm_server: VllmServer) -> None:
    body = {"messages": [{"role": "user", "content": "Hi!"}], **forced("Hello."), "chat_template": DROPS_OLD_CONTENT}
    async with exact_server(exact_config(vllm_server)) as (url, http):
        async with http.post(url + "/v1/chat/completions", json=body) as resp:
            first = await resp.json()
            assert resp.status == 200, first
        body["messages"] = [*body["messages"], first["choices"][0]["message"], {"role": "user", "content": "And?"}]
        async with http.post(url + "/v1/chat/completions", json=body) as resp:
            error = await resp.json()
    # Probed on the request's first later turn: a 5xx (the model server's failure, never the task's) naming what
    # the template does.
    assert resp.status == 502
    assert "token_exact: require" in error["error"]["message"]
    assert "drops or rewrites this assistant turn's content" in error["error"]["message"]


async def test_sampling_fields_apply_as_in_the_chat_path(vllm_server: VllmServer) -> None:
    body = {
        "messages": [{"role": "user", "content": "Weather?"}],
        **forced("</think>It is sunny in SF."),
        "stop": ["sunny"],
    }
    overrides = {"logprobs": False, "top_k": 1}  # the token flags win over an override that would drop log-probs
    async with exact_server(exact_config(vllm_server, sampling_overrides=overrides)) as (url, http):
        async with http.post(url + "/v1/chat/completions", json=body) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
    choice = answer["choices"][0]
    assert choice["message"]["content"] == "It is " and choice["finish_reason"] == "stop"
    turn = TokenTurn.of(choice["message"])
    assert len(turn.generation_token_ids) == len(turn.generation_log_probs) > 0


async def test_context_overflow_is_an_incomplete_response(vllm_server: VllmServer) -> None:
    async with exact_server(exact_config(vllm_server)) as (url, http):
        async with http.post(url + "/v1/responses", json={"input": "weather " * 1500}) as resp:
            answer = await resp.json()
    assert resp.status == 200, answer
    assert answer["status"] == "incomplete"
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}


def responses_content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    return [{"type": "input_text", "text": part["text"]} for part in content]


def turn_fields(turn: dict[str, Any], tools: list[dict[str, Any]] | None, max_key: str) -> dict[str, Any]:
    fields: dict[str, Any] = {max_key: turn.get("max_tokens", 200), "temperature": turn.get("temperature", 0)}
    if "text" in turn:
        fields["structured_outputs"] = {"regex": literal_regex(turn["text"])}
    if tools:
        fields["tools"] = tools
    return fields


@pytest.mark.parametrize("case", CONVERSATIONS, ids=[case["name"] for case in CONVERSATIONS])
async def test_our_conversations_are_token_exact_through_both_apis(
    vllm_server: VllmServer, case: dict[str, Any]
) -> None:
    """tests/data/token_exact/conversations.jsonl: system and developer prompts, unicode, whitespace, tool
    calls (two in a turn, text beside one), reasoning (cut mid-thought too), content parts, long histories."""
    turns = len(case["turns"])
    async with exact_server(exact_config(vllm_server)) as (url, http):
        chat_tools = [WEATHER_TOOL] if case["tools"] else None
        chat_fields = [turn_fields(turn, chat_tools, "max_tokens") for turn in case["turns"]]
        chat = await run_chat_conversation(http, url, case["messages"], turns, chat_fields, case["follow_ups"])
        responses_tools = [RESPONSES_TOOL] if case["tools"] else None
        fields = [turn_fields(turn, responses_tools, "max_output_tokens") for turn in case["turns"]]
        first = [{"role": m["role"], "content": responses_content(m["content"])} for m in case["messages"]]
        history = await run_responses_conversation(http, url, first, turns, fields, case["follow_ups"])
    assert len(chat.turns) == turns and broken_turns(chat.turns) == []
    responses = response_turns(history)
    assert len(responses) == turns and broken_turns(responses) == []
