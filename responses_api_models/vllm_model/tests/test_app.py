"""vllm_model over HTTP, in front of the scripted vLLM stand-in: what reaches vLLM, what comes back, failures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from ngym.http.app import serve_in_background
from ngym.servers.base import StartupError
from ngym.upstream.pool import UPSTREAM_COOKIE
from responses_api_models.vllm_model.app import VllmModel
from testkit.standin.script import Delay, DropConnection, HttpFault, StandinScript
from testkit.standin.server import StandinServer
from testkit.standin.wire import UNAUTHORIZED_BODY, fake_detokenize, fake_tokenize, render_chat, vllm_error_body
from testkit.tiny_model import SERVED_MODEL_NAME

MODEL = SERVED_MODEL_NAME
# A distinctive key, so that a leak into any answer or log line is easy to spot.
API_KEY = "sk-ngym-test-7f1c2a9e4b"


def model_config(base_url: str | list[str], **options: Any) -> dict[str, Any]:
    section = {"entrypoint": "app.py", "base_url": base_url, "api_key": API_KEY, "model": MODEL, **options}
    return {"policy_model": {"responses_api_models": {"vllm_model": section}}}


@contextlib.asynccontextmanager
async def model_server(base_url: str | list[str], **options: Any) -> AsyncIterator[str]:
    """The model server on a free port (its start-up checks run on entry); yields its base URL."""
    server = VllmModel.from_config(model_config(base_url, **options), "policy_model")
    async with serve_in_background(server.app()) as url:
        yield url


@contextlib.asynccontextmanager
async def running(script: StandinScript | None = None, **options: Any) -> AsyncIterator[tuple[StandinServer, str]]:
    """One stand-in (guarded by API_KEY) and a model server in front of it."""
    script = script or StandinScript()
    if script.api_key is None:
        script.api_key = API_KEY
    async with StandinServer(script) as vllm, model_server(vllm.base_url, **options) as url:
        yield vllm, url


Servers = Callable[..., contextlib.AbstractAsyncContextManager[tuple[StandinServer, str]]]


@pytest.fixture(scope="module")
async def shared_pair() -> AsyncIterator[tuple[StandinServer, str]]:
    async with running() as pair:
        yield pair


@pytest.fixture
def servers(shared_pair: tuple[StandinServer, str]) -> Servers:
    """`async with servers(script, **options) as (vllm, url)`: without options, the module's shared stand-in and
    model server, with `script` (or a fresh default one) swapped in; with options, a fresh pair."""

    @contextlib.asynccontextmanager
    async def open_pair(
        script: StandinScript | None = None, **options: Any
    ) -> AsyncIterator[tuple[StandinServer, str]]:
        if options:
            async with running(script, **options) as pair:
                yield pair
            return
        vllm, url = shared_pair
        script = script or StandinScript()
        script.api_key = API_KEY
        vllm.script = script
        yield vllm, url

    return open_pair


@dataclass
class Answer:
    status: int
    body: Any
    text: str
    cookie: str | None  # the ngym_upstream cookie this answer set, if any


class Caller:
    """A plain HTTP caller that keeps no cookies of its own: each test says which cookie it sends."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def post(
        self,
        url: str,
        body: Any,
        *,
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        sent["Content-Type"] = "application/json"
        if cookie is not None:
            sent["Cookie"] = f"{UPSTREAM_COOKIE}={cookie}"
        data = raw if raw is not None else orjson.dumps(body)
        async with self.http.post(url, data=data, headers=sent) as resp:
            text = await resp.text()
            morsel = resp.cookies.get(UPSTREAM_COOKIE)
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                parsed = None
            return Answer(resp.status, parsed, text, morsel.value if morsel is not None else None)

    async def responses(self, url: str, body: Any, **kwargs: Any) -> Answer:
        return await self.post(url + "/v1/responses", body, **kwargs)

    async def chat(self, url: str, body: Any, **kwargs: Any) -> Answer:
        return await self.post(url + "/v1/chat/completions", body, **kwargs)


@pytest.fixture
async def caller() -> AsyncIterator[Caller]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield Caller(http)


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
CHAT_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
VLLM_ONLY_FIELDS = {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "skip_special_tokens": False}


def chat_answer(message: dict[str, Any], finish_reason: str = "stop", **fields: Any) -> dict[str, Any]:
    """A vLLM chat completion body with the given message (for scripted answers: HttpFault(200, body))."""
    choice = {"index": 0, "message": {"role": "assistant", **message}, "logprobs": None, "finish_reason": finish_reason}
    body: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [choice],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    for key, value in fields.items():
        if key in ("logprobs", "token_ids"):
            choice[key] = value
        else:
            body[key] = value
    return body


def token_logprobs(ids: list[int]) -> dict[str, Any]:
    return {"content": [{"token": f"token_id:{i}", "logprob": -0.5, "bytes": [], "top_logprobs": []} for i in ids]}


def expected_prompt_ids(upstream_body: dict[str, Any]) -> list[int]:
    """The prompt IDs the stand-in's fake tokeniser gives for a request it received."""
    return fake_tokenize(render_chat(upstream_body["messages"], upstream_body.get("tools")))


def texts(response: dict[str, Any]) -> list[str]:
    return [part["text"] for item in response["output"] if item["type"] == "message" for part in item["content"]]


# --- what reaches vLLM ----------------------------------------------------------------------------------


async def test_responses_request_is_mapped_to_chat_for_vllm(servers: Servers, caller: Caller) -> None:
    async with servers() as (vllm, url):
        body = {
            "model": "gpt-4o",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is in this picture?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                    ],
                },
            ],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
            "max_output_tokens": 64,
            "temperature": 0.7,
            "top_p": 0.9,
            "seed": 7,
            "stop": ["\n\n"],
            "metadata": {"task": "t1"},
            "user": "u1",
            "store": False,
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
            "reasoning": {"effort": "low", "summary": "auto"},
            **VLLM_ONLY_FIELDS,
        }
        answer = await caller.responses(url, body)
        assert answer.status == 200, answer.text
        sent = vllm.log.last_body()

    assert sent["model"] == MODEL
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ],
        },
    ]
    assert sent["tools"] == [CHAT_WEATHER_TOOL]  # flat -> nested, strict dropped
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False
    assert sent["max_tokens"] == 64 and "max_output_tokens" not in sent
    for key in ("temperature", "top_p", "seed", "stop", "metadata", "user", *VLLM_ONLY_FIELDS):
        assert sent[key] == body[key], key
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    assert sent["reasoning_effort"] == "low"
    for dropped in ("store", "instructions", "input", "text", "reasoning"):
        assert dropped not in sent
    # The Response echoes what was asked.
    echoed = answer.body
    assert echoed["instructions"] == "Be brief." and echoed["tools"] == [WEATHER_TOOL]
    assert echoed["max_output_tokens"] == 64 and echoed["temperature"] == 0.7 and echoed["text"] == body["text"]


@pytest.mark.parametrize("tools", [None, [], "absent"])
async def test_without_tools_no_tool_keys_reach_vllm(servers: Servers, caller: Caller, tools: Any) -> None:
    body: dict[str, Any] = {"input": "hi", "tool_choice": "auto", "parallel_tool_calls": True}
    if tools != "absent":
        body["tools"] = tools
    async with servers() as (vllm, url):
        answer = await caller.responses(url, body)
        sent = vllm.log.last_body()
    assert answer.status == 200, answer.text
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(sent)


async def test_chat_request_reaches_vllm_untouched_but_for_the_model(servers: Servers, caller: Caller) -> None:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  weather in SF?\n"}],
        "tools": [CHAT_WEATHER_TOOL],
        "tool_choice": "auto",
        "max_tokens": 50,
        "some_future_vllm_field": {"a": [1, 2]},
        **VLLM_ONLY_FIELDS,
    }
    async with servers() as (vllm, url):
        answer = await caller.chat(url, body)
        sent = vllm.log.last_body()
    assert answer.status == 200, answer.text
    assert sent == {**body, "model": MODEL}


async def test_configured_extras_are_applied(servers: Servers, caller: Caller) -> None:
    options = {
        "extra_body": {"top_k": 5, "skip_special_tokens": False},
        "chat_template_kwargs": {"enable_thinking": False, "style": "config"},
        "sampling_overrides": {"temperature": 0.0, "seed": 99},
        "default_headers": {"X-Team": "rl"},
    }
    async with servers(**options) as (vllm, url):
        plain = await caller.responses(url, {"input": "hi", "temperature": 1.2})
        chat = await caller.chat(
            url,
            {
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 1.2,
                "seed": 1,
                "top_k": 40,
                "chat_template_kwargs": {"style": "caller"},
            },
        )
        first, second = vllm.log.requests()
    assert plain.status == 200 and chat.status == 200
    # extra_body fills in what the caller did not set; sampling_overrides win over everything.
    assert first.json()["top_k"] == 5 and first.json()["skip_special_tokens"] is False
    assert first.json()["chat_template_kwargs"] == {"enable_thinking": False, "style": "config"}
    assert first.json()["temperature"] == 0.0 and first.json()["seed"] == 99
    assert second.json()["top_k"] == 40 and second.json()["skip_special_tokens"] is False
    assert second.json()["chat_template_kwargs"] == {"enable_thinking": False, "style": "caller"}
    assert second.json()["temperature"] == 0.0 and second.json()["seed"] == 99
    for request in (first, second):
        assert request.headers["x-team"] == "rl"
        assert request.headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("replace", [False, True])
async def test_developer_role_becomes_system_only_when_configured(
    servers: Servers, caller: Caller, replace: bool
) -> None:
    developer = {"role": "developer", "content": "Use tools."}
    async with servers(replace_developer_role_with_system=replace) as (vllm, url):
        await caller.responses(url, {"input": [developer, {"role": "user", "content": "hi"}]})
        await caller.chat(url, {"messages": [developer, {"role": "user", "content": "hi"}]})
        bodies = vllm.log.bodies()
    for sent in bodies:
        assert sent["messages"][0] == {"role": "system" if replace else "developer", "content": "Use tools."}


async def test_history_becomes_one_assistant_message_per_turn(servers: Servers, caller: Caller) -> None:
    history = [
        {"role": "user", "content": "Weather in SF and LA?"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Two cities."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "SF"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city": "LA"}'},
        {"type": "function_call_output", "call_id": "c1", "output": '{"weather": "sunny"}'},
        {"type": "function_call_output", "call_id": "c2", "output": '{"weather": "rainy"}'},
        {"role": "assistant", "content": "<think>Both known.</think>SF is sunny, LA is rainy."},
        {"role": "user", "content": "Thanks"},
    ]
    chat_history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "<think>Greet back.</think>Hello!"},
        {"role": "user", "content": "bye"},
    ]
    async with servers() as (vllm, url):
        assert (await caller.responses(url, {"input": history, "tools": [WEATHER_TOOL]})).status == 200
        assert (await caller.chat(url, {"messages": chat_history})).status == 200
        responses_sent, chat_sent = vllm.log.bodies()
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "SF"}'}},
        {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "LA"}'}},
    ]
    assert responses_sent["messages"] == [
        {"role": "user", "content": "Weather in SF and LA?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "Two cities.",
            "reasoning": "Two cities.",
            "tool_calls": calls,
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"weather": "sunny"}'},
        {"role": "tool", "tool_call_id": "c2", "content": '{"weather": "rainy"}'},
        {
            "role": "assistant",
            "content": "SF is sunny, LA is rainy.",
            "reasoning_content": "Both known.",
            "reasoning": "Both known.",
        },
        {"role": "user", "content": "Thanks"},
    ]
    assert chat_sent["messages"][1] == {
        "role": "assistant",
        "content": "Hello!",
        "reasoning_content": "Greet back.",
        "reasoning": "Greet back.",
    }


async def test_with_the_reasoning_parser_off_think_text_passes_untouched(servers: Servers, caller: Caller) -> None:
    script = StandinScript(reasoning_parser=False, reply_text="<think>hmm</think>Done.")
    history = {"role": "assistant", "content": "<think>earlier</think>Before."}
    async with servers(script, uses_reasoning_parser=False) as (vllm, url):
        responses = await caller.responses(url, {"input": [{"role": "user", "content": "hi"}, history]})
        chat = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}, history]})
        bodies = vllm.log.bodies()
    assert [item["type"] for item in responses.body["output"]] == ["message"]
    assert texts(responses.body) == ["<think>hmm</think>Done."]
    assert chat.body["choices"][0]["message"]["content"] == "<think>hmm</think>Done."
    for sent in bodies:
        assert sent["messages"][-1] == {"role": "assistant", "content": "<think>earlier</think>Before."}


async def test_text_and_whitespace_survive_both_ways(servers: Servers, caller: Caller) -> None:
    reply = "  Two\n\nlines,\ttabs, ünïcödé 🌤 and trailing spaces  \n"
    prompt = "\n  spaced  out\t, naïve 🌧\n"
    async with servers(StandinScript(reply_text=reply)) as (vllm, url):
        responses = await caller.responses(url, {"input": prompt})
        chat = await caller.chat(url, {"messages": [{"role": "user", "content": prompt}]})
        sent_responses, sent_chat = vllm.log.bodies()
    assert texts(responses.body) == [reply]
    assert chat.body["choices"][0]["message"]["content"] == reply
    assert sent_responses["messages"] == [{"role": "user", "content": prompt}]
    assert sent_chat["messages"] == [{"role": "user", "content": prompt}]


async def test_session_id_is_forwarded_to_vllm(servers: Servers, caller: Caller) -> None:
    async with servers() as (vllm, url):
        first = await caller.responses(url, {"input": "hi"})
        assert first.cookie is not None
        await caller.responses(url, {"input": "again"}, cookie=first.cookie)
        await caller.chat(url, {"messages": [{"role": "user", "content": "x"}]}, headers={"X-Session-ID": "rollout-42"})
        ids = vllm.log.session_ids()
    session_id = first.cookie.rpartition(".")[0]
    assert ids == [session_id, session_id, "rollout-42"]


# --- what comes back ------------------------------------------------------------------------------------


async def test_responses_answer_shape_with_reasoning_function_call_and_usage(servers: Servers, caller: Caller) -> None:
    script = StandinScript(tool_call_mode=True, reasoning_text="The user wants SF.")
    async with servers(script) as (vllm, url):
        answer = await caller.responses(
            url, {"input": "Weather in SF?", "tools": [WEATHER_TOOL], "model": "whatever", "metadata": {"k": "v"}}
        )
        sent = vllm.log.last_body()
    assert answer.status == 200, answer.text
    response = answer.body
    assert response["object"] == "response" and response["id"].startswith("resp_")
    assert response["status"] == "completed" and response["incomplete_details"] is None and response["error"] is None
    assert response["model"] == MODEL and response["metadata"] == {"k": "v"}
    assert response["tools"] == [WEATHER_TOOL]
    reasoning, call = response["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "The user wants SF."}]
    assert call["type"] == "function_call" and call["name"] == "get_weather" and call["status"] == "completed"
    assert orjson.loads(call["arguments"]) == {"city": "SF"} and call["call_id"]
    usage = response["usage"]
    assert usage["input_tokens"] == len(expected_prompt_ids(sent))
    assert usage["output_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_tokens_details"]["reasoning_tokens"] == len("The user wants SF.")


async def test_reasoning_content_of_older_vllm_is_read_too(servers: Servers, caller: Caller) -> None:
    older = chat_answer({"content": "It is sunny.", "reasoning_content": "Look it up."})
    async with servers() as (vllm, url):
        vllm.script.inject(HttpFault(200, older), HttpFault(200, older))
        responses = await caller.responses(url, {"input": "Weather?"})
        chat = await caller.chat(url, {"messages": [{"role": "user", "content": "Weather?"}]})
    reasoning, message = responses.body["output"]
    assert reasoning["summary"][0]["text"] == "Look it up."
    assert message["content"][0]["text"] == "It is sunny."
    chat_message = chat.body["choices"][0]["message"]
    assert chat_message["content"] == "<think>Look it up.</think>It is sunny."
    assert "reasoning_content" not in chat_message and "reasoning" not in chat_message


async def test_chat_answer_has_think_at_the_head_of_content(servers: Servers, caller: Caller) -> None:
    script = StandinScript(reasoning_text="Say hello.")
    async with servers(script) as (_vllm, url):
        answer = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}]})
    message = answer.body["choices"][0]["message"]
    assert message["content"] == "<think>Say hello.</think>Hello! How can I help you?"
    assert "reasoning" not in message and "reasoning_content" not in message
    assert answer.body["choices"][0]["finish_reason"] == "stop"


async def test_chat_tool_calls_come_back(servers: Servers, caller: Caller) -> None:
    async with servers(StandinScript(tool_call_mode=True)) as (_vllm, url):
        answer = await caller.chat(
            url, {"messages": [{"role": "user", "content": "SF?"}], "tools": [CHAT_WEATHER_TOOL]}
        )
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and orjson.loads(call["function"]["arguments"]) == {"city": "SF"}


async def test_max_output_tokens_cut_gives_an_incomplete_response(servers: Servers, caller: Caller) -> None:
    async with servers() as (_vllm, url):
        answer = await caller.responses(url, {"input": "hi", "max_output_tokens": 4})
    assert answer.body["status"] == "incomplete"
    assert answer.body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer.body["usage"]["output_tokens"] == 4


# --- token data for training ----------------------------------------------------------------------------


def assert_token_fields(item: dict[str, Any]) -> None:
    assert isinstance(item["prompt_token_ids"], list) and item["prompt_token_ids"]
    assert item["generation_token_ids"] and all(isinstance(i, int) for i in item["generation_token_ids"])
    assert len(item["generation_token_ids"]) == len(item["generation_log_probs"])


async def test_training_mode_responses_turns_carry_token_data(servers: Servers, caller: Caller) -> None:
    script = StandinScript(tool_call_mode=True, reasoning_text="Need the tool.")
    question = [{"role": "user", "content": "Weather in SF?"}]
    async with servers(script, return_token_id_information=True, token_exact="never") as (vllm, url):
        first = await caller.responses(url, {"input": question, "tools": [WEATHER_TOOL]})
        assert first.status == 200, first.text
        output = first.body["output"]
        call = output[-1]
        history = [*question, *output, {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]
        second = await caller.responses(url, {"input": history, "tools": [WEATHER_TOOL]}, cookie=first.cookie)
        assert second.status == 200, second.text
        sent_first, sent_second = vllm.log.bodies()

    for sent in (sent_first, sent_second):
        assert sent["logprobs"] is True and sent["top_logprobs"] == 0
        assert sent["return_token_ids"] is True and sent["return_tokens_as_token_ids"] is True
    # On the last item only, and the numbers are the ones vLLM produced for that very prompt.
    assert [item["type"] for item in output] == ["reasoning", "function_call"]
    assert "prompt_token_ids" not in output[0]
    assert_token_fields(call)
    assert call["prompt_token_ids"] == expected_prompt_ids(sent_first)
    assert fake_detokenize(call["generation_token_ids"]).startswith("<think>Need the tool.</think><tool_call>")
    final = second.body["output"][-1]
    assert final["type"] == "message" and texts(second.body) == ["It is sunny in SF."]
    assert_token_fields(final)
    assert final["prompt_token_ids"] == expected_prompt_ids(sent_second)

    # Fed back: the token data goes to vLLM on the matching assistant message, and on no other message.
    messages = sent_second["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assistant = messages[1]
    for field in ("prompt_token_ids", "generation_token_ids", "generation_log_probs"):
        assert assistant[field] == call[field]
        assert all(field not in m for m in (messages[0], messages[2]))


async def test_training_mode_chat_message_carries_token_data(servers: Servers, caller: Caller) -> None:
    async with servers(return_token_id_information=True, token_exact="never") as (vllm, url):
        first = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}]})
        message = first.body["choices"][0]["message"]
        history = [
            {"role": "user", "content": "hi"},
            message,
            {"role": "user", "content": "and now?"},
        ]
        second = await caller.chat(url, {"messages": history}, cookie=first.cookie)
        sent_first, sent_second = vllm.log.bodies()
    assert first.status == 200 and second.status == 200, second.text
    assert sent_first["logprobs"] is True and sent_first["return_token_ids"] is True
    assert_token_fields(message)
    assert message["prompt_token_ids"] == expected_prompt_ids(sent_first)
    assert "prompt_token_ids" not in first.body and "token_ids" not in first.body["choices"][0]
    user, assistant, follow_up = sent_second["messages"]
    assert assistant["generation_token_ids"] == message["generation_token_ids"]
    assert assistant["prompt_token_ids"] == message["prompt_token_ids"]
    assert "generation_token_ids" not in user and "generation_token_ids" not in follow_up
    assert_token_fields(second.body["choices"][0]["message"])
    async with servers(return_token_id_information=True, token_exact="never") as (_vllm, url):
        several = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}], "n": 2})
    assert several.status == 422 and several.body["error"]["param"] == "n"


async def test_token_fields_are_checked_in_training_mode_and_ignored_otherwise(
    servers: Servers, caller: Caller
) -> None:
    tokens = {"prompt_token_ids": [1, 2], "generation_token_ids": [3, 4], "generation_log_probs": [-0.1, -0.2]}
    partial = {"prompt_token_ids": [1, 2], "generation_token_ids": [3, 4]}
    assistant = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]}

    def history(fields: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"role": "user", "content": "hi"}, {**assistant, **fields}, {"role": "user", "content": "more"}]

    async with servers(return_token_id_information=True, token_exact="never") as (vllm, url):
        refused = await caller.responses(url, {"input": history(partial)})
        assert vllm.log.count() == 0
    assert refused.status == 422 and refused.body["error"]["param"] == "input[1].generation_log_probs"
    async with servers() as (vllm, url):
        ignored = await caller.responses(url, {"input": history(tokens)})
        sent = vllm.log.last_body()
    assert ignored.status == 200
    assert sent["messages"][1] == {"role": "assistant", "content": "Hi."}
    assert "logprobs" not in sent and "return_token_ids" not in sent


async def test_training_mode_falls_back_to_tokenize_without_inline_prompt_ids(servers: Servers, caller: Caller) -> None:
    scripted = chat_answer({"content": "ok"}, logprobs=token_logprobs([111, 107]), token_ids=[111, 107])
    async with servers(return_token_id_information=True, token_exact="never") as (vllm, url):
        vllm.script.inject(HttpFault(200, scripted))
        answer = await caller.responses(url, {"input": "hi"})
        tokenize = vllm.log.last_body("/tokenize")
        sent = vllm.log.last_body()
    assert answer.status == 200, answer.text
    item = answer.body["output"][-1]
    assert item["generation_token_ids"] == [111, 107] and item["generation_log_probs"] == [-0.5, -0.5]
    assert item["prompt_token_ids"] == expected_prompt_ids(sent)
    assert tokenize["messages"] == sent["messages"] and tokenize["model"] == MODEL


@pytest.mark.parametrize(
    "scripted",
    [
        chat_answer({"content": "ok"}, logprobs=token_logprobs([1, 2]), token_ids=[1, 2, 3], prompt_token_ids=[5]),
        chat_answer({"content": "ok"}, logprobs=None, token_ids=[1, 2], prompt_token_ids=[5]),
    ],
    ids=["unequal-lengths", "no-logprobs"],
)
async def test_training_mode_refuses_inconsistent_token_data(
    servers: Servers, caller: Caller, scripted: dict[str, Any]
) -> None:
    async with servers(return_token_id_information=True, token_exact="never") as (vllm, url):
        vllm.script.inject(HttpFault(200, scripted), HttpFault(200, scripted))
        responses = await caller.responses(url, {"input": "hi"})
        chat = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}]})
    for answer in (responses, chat):
        assert answer.status == 502
        assert "token" in answer.body["error"]["message"] and vllm.base_url in answer.body["error"]["message"]


# --- failures -------------------------------------------------------------------------------------------


async def test_context_length_overflow_is_an_empty_incomplete_answer(servers: Servers, caller: Caller) -> None:
    script = StandinScript(max_model_len=200)
    long_prompt = "weather " * 100
    async with servers(script) as (vllm, url):
        responses = await caller.responses(url, {"input": long_prompt, "max_output_tokens": 10})
        chat = await caller.chat(url, {"messages": [{"role": "user", "content": long_prompt}]})
        assert vllm.log.count() == 2  # answered, not retried
    assert responses.status == 200, responses.text
    assert responses.body["status"] == "incomplete"
    assert responses.body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert texts(responses.body) == [""] and responses.body["max_output_tokens"] == 10
    assert chat.status == 200
    choice = chat.body["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["content"] == ""


async def test_max_tokens_over_the_model_length_is_the_callers_error(servers: Servers, caller: Caller) -> None:
    """vLLM's 400 for max_tokens > max_model_len names max_model_len but is no context overflow: an empty
    'incomplete' answer would hide the mistake in every rollout."""
    async with servers(StandinScript(max_model_len=1024)) as (_vllm, url):
        responses = await caller.responses(url, {"input": "hi", "max_output_tokens": 2000})
        chat = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000})
    for answer in (responses, chat):
        assert answer.status == 400, answer.text
        assert "max_tokens=2000 cannot be greater than max_model_len=1024" in answer.body["error"]["message"]


async def test_429_and_503_are_retried_then_succeed(servers: Servers, caller: Caller) -> None:
    async with servers() as (vllm, url):
        vllm.script.inject(HttpFault(429), HttpFault(503))
        answer = await caller.responses(url, {"input": "hi"})
        assert answer.status == 200, answer.text
        assert vllm.log.count() == 3
        vllm.script.inject(HttpFault(500))
        chat = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}]})
        assert chat.status == 200 and vllm.log.count() == 5


async def test_persistent_503_is_a_clear_502_after_bounded_attempts(servers: Servers, caller: Caller) -> None:
    async with servers(max_retries=2) as (vllm, url):
        vllm.script.down = HttpFault(503)
        answer = await caller.responses(url, {"input": "hi"})
        attempts = vllm.log.count()
    assert attempts == 3
    assert answer.status == 502
    message = answer.body["error"]["message"]
    assert vllm.base_url in message and "503" in message


async def test_retries_stop_at_the_deadline(servers: Servers, caller: Caller) -> None:
    async with servers(max_retries=1000, retry_deadline_s=0.3) as (vllm, url):
        vllm.script.down = HttpFault(429)
        answer = await caller.responses(url, {"input": "hi"})
        attempts = vllm.log.count()
    assert answer.status == 502 and "429" in answer.body["error"]["message"]
    assert 1 < attempts < 1001


async def test_no_connection_pool_caps_concurrent_requests(servers: Servers) -> None:
    """More concurrent requests than aiohttp's default pool of 100 all reach vLLM at once."""
    n = 150
    async with servers() as (vllm, url):
        vllm.script.down = Delay(1.5)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as http:
            many = Caller(http)
            tasks = [asyncio.create_task(many.responses(url, {"input": f"task {i}"})) for i in range(n)]
            while vllm.log.count() < n and not any(task.done() for task in tasks):
                await asyncio.sleep(0.01)
            in_flight_together = vllm.log.count()
            answers = await asyncio.gather(*tasks)
    assert in_flight_together == n
    assert all(answer.status == 200 for answer in answers)


async def test_dropped_connection_is_retried(servers: Servers, caller: Caller) -> None:
    async with servers() as (vllm, url):
        vllm.script.inject(DropConnection())
        answer = await caller.responses(url, {"input": "hi"})
        assert vllm.log.count() == 2
    assert answer.status == 200 and texts(answer.body) == ["Hello! How can I help you?"]


async def test_client_errors_are_not_retried_and_say_what_vllm_said(servers: Servers, caller: Caller) -> None:
    bad = HttpFault(400, vllm_error_body(400, "temperature must be non-negative, got -1.0.", "temperature"))
    async with servers() as (vllm, url):
        vllm.script.inject(bad)
        rejected = await caller.responses(url, {"input": "hi", "temperature": -1})
        assert vllm.log.count() == 1
        vllm.script.model = "another-model"  # vLLM now serves another model: 404 for ours
        missing = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}]})
        assert vllm.log.count() == 2
    assert rejected.status == 400
    assert "temperature must be non-negative" in rejected.body["error"]["message"]
    assert vllm.base_url in rejected.body["error"]["message"]
    assert missing.status == 404
    assert f"The model `{MODEL}` does not exist" in missing.body["error"]["message"]


async def test_upstream_timeout_is_a_504_naming_the_upstream(servers: Servers, caller: Caller) -> None:
    async with servers(request_timeout_s=0.2) as (vllm, url):
        vllm.script.inject(Delay(1.0))
        answer = await caller.responses(url, {"input": "hi"})
    assert answer.status == 504
    assert vllm.base_url in answer.body["error"]["message"] and "timeout" in answer.body["error"]["message"]


async def test_refused_connection_after_start_up_is_a_clear_502(servers: Servers, caller: Caller) -> None:
    async with servers(max_retries=1) as (vllm, url):
        await vllm.stop()
        answer = await caller.responses(url, {"input": "hi"})
    assert answer.status == 502
    assert vllm.base_url in answer.body["error"]["message"] and "connect" in answer.body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/responses", {"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ("/v1/responses", {"input": [{"role": "user", "content": [{"type": "video"}]}]}, "input[0].content[0].type"),
        ("/v1/responses", {"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ("/v1/responses", {"input": 42}, "input"),
        ("/v1/responses", {"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ("/v1/responses", {"input": "hi", "stream": True}, "stream"),
        ("/v1/chat/completions", {"messages": "hello"}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stream": True}, "stream"),
        ("/v1/responses", ["not", "an", "object"], None),
    ],
)
async def test_malformed_requests_are_4xx_naming_the_field(
    servers: Servers, caller: Caller, path: str, body: Any, param: str | None
) -> None:
    async with servers() as (vllm, url):
        answer = await caller.post(url + path, body)
        not_json = await caller.post(url + path, None, raw=b"{not json")
        assert vllm.log.count() == 0  # refused before anything reached vLLM
    assert answer.status == 422, answer.text
    error = answer.body["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param and param in error["message"]
    assert not_json.status == 400 and "JSON" in not_json.body["error"]["message"]


async def test_the_api_key_never_shows(
    servers: Servers, caller: Caller, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with servers(request_timeout_s=0.2, max_retries=0) as (vllm, url):
        for fault in (HttpFault(503), DropConnection(), Delay(1.0), HttpFault(400), HttpFault(401, UNAUTHORIZED_BODY)):
            vllm.script.inject(fault)
            seen.append((await caller.responses(url, {"input": "hi"})).text)
        vllm.script.api_key = "rotated-key"  # the key is no longer accepted
        refused = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}]})
        seen.append(refused.text)
        assert refused.status == 502 and "refused the api_key" in refused.text
        with pytest.raises(StartupError) as wrong_key:
            async with model_server(vllm.base_url):
                pass
        seen.append(str(wrong_key.value))
        await vllm.stop()
        with pytest.raises(StartupError) as unreachable:
            async with model_server(vllm.base_url):
                pass
        seen.append(str(unreachable.value))
        seen.append((await caller.responses(url, {"input": "hi"})).text)
    captured = capsys.readouterr()
    assert all(text for text in seen)
    assert "refused the api_key" in captured.err  # the start-up refusal was logged, and that log was captured
    for text in (*seen, caplog.text, captured.out, captured.err):
        assert API_KEY not in text


# --- start-up checks ------------------------------------------------------------------------------------


async def test_start_up_refuses_an_unreachable_base_url() -> None:
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        base_url = f"http://127.0.0.1:{port}/v1"
        with pytest.raises(StartupError) as refused:
            async with model_server(base_url):
                pass
    message = str(refused.value)
    assert f"{base_url}/models" in message
    assert f"curl http://127.0.0.1:{port}/health" in message


async def test_start_up_refuses_a_wrong_api_key() -> None:
    async with StandinServer(StandinScript(api_key="the-right-key")) as vllm:
        with pytest.raises(StartupError) as refused:
            async with model_server(vllm.base_url):
                pass
    message = str(refused.value)
    assert "refused the api_key" in message and vllm.base_url in message
    assert API_KEY not in message and "the-right-key" not in message


async def test_start_up_refuses_a_model_that_is_not_served() -> None:
    async with StandinServer(StandinScript(model="served-model")) as vllm:
        with pytest.raises(StartupError) as refused:
            async with model_server(vllm.base_url):
                pass
    message = str(refused.value)
    assert repr(MODEL) in message and "served-model" in message and vllm.base_url in message


async def test_start_up_checks_every_base_url(
    servers: Servers,
) -> None:
    async with StandinServer(StandinScript()) as good, StandinServer(StandinScript(model="other")) as bad:
        with pytest.raises(StartupError) as refused:
            async with model_server([good.base_url, bad.base_url]):
                pass
    assert bad.base_url in str(refused.value) and "other" in str(refused.value)


# --- several vLLM servers -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_servers(**options: Any) -> AsyncIterator[tuple[list[StandinServer], str]]:
    async with StandinServer(StandinScript()) as a, StandinServer(StandinScript()) as b:
        async with model_server([a.base_url, b.base_url], api_key=None, **options) as url:
            yield [a, b], url


def server_of(cookie: str | None) -> int:
    assert cookie is not None
    return int(cookie.rpartition(".")[2])


async def test_a_session_stays_on_one_server_and_new_sessions_spread(servers: Servers, caller: Caller) -> None:
    async with two_servers() as (vllms, url):
        fresh = [await caller.responses(url, {"input": f"task {n}"}) for n in range(4)]
        assert {server_of(answer.cookie) for answer in fresh} == {0, 1}
        assert [vllm.log.count() for vllm in vllms] == [2, 2]

        first = fresh[0]
        home = server_of(first.cookie)
        for turn in range(3):
            answer = await caller.responses(url, {"input": f"turn {turn}"}, cookie=first.cookie)
            assert answer.status == 200 and answer.cookie is None  # already pinned: no new cookie
        counts = [vllm.log.count() for vllm in vllms]
        session_id = first.cookie.rpartition(".")[0]  # type: ignore[union-attr]
        assert counts[home] == 5 and counts[1 - home] == 2
        assert vllms[home].log.session_ids()[-3:] == [session_id] * 3


async def test_new_sessions_go_to_the_least_loaded_server(caller: Caller) -> None:
    async with two_servers() as (vllms, url):
        vllms[0].script.down = Delay(1.0)
        busy = [
            asyncio.create_task(caller.responses(url, {"input": "long"}, cookie="busy-session.0")) for _ in range(3)
        ]
        while vllms[0].log.count() < 3:
            await asyncio.sleep(0.01)
        fresh = [await caller.responses(url, {"input": f"task {n}"}) for n in range(3)]
        assert all(answer.status == 200 for answer in await asyncio.gather(*busy))
    assert [server_of(answer.cookie) for answer in fresh] == [1, 1, 1]


async def test_the_session_cookie_routes_the_same_in_every_worker(caller: Caller) -> None:
    async with StandinServer(StandinScript()) as a, StandinServer(StandinScript()) as b:
        urls = [a.base_url, b.base_url]
        async with model_server(urls, api_key=None) as worker1, model_server(urls, api_key=None) as worker2:
            first = await caller.responses(worker1, {"input": "hi"})
            home = [a, b][server_of(first.cookie)]
            before = home.log.count()
            for _ in range(3):
                assert (await caller.responses(worker2, {"input": "more"}, cookie=first.cookie)).status == 200
            assert home.log.count() == before + 3


async def test_a_server_going_down_moves_its_session(servers: Servers, caller: Caller) -> None:
    async with two_servers(health_check_interval_s=0.05) as (vllms, url):
        first = await caller.responses(url, {"input": "hi"})
        home = server_of(first.cookie)
        await vllms[home].stop()
        moved = await caller.responses(url, {"input": "still there?"}, cookie=first.cookie)
        assert moved.status == 200, moved.text
        assert server_of(moved.cookie) == 1 - home
        assert moved.cookie.rpartition(".")[0] == first.cookie.rpartition(".")[0]  # type: ignore[union-attr]
        again = await caller.responses(url, {"input": "and now?"}, cookie=moved.cookie)
        assert again.status == 200 and again.cookie is None
        assert vllms[1 - home].log.count() == 2


async def test_a_server_that_drops_connections_leaves_rotation_until_healthy(servers: Servers, caller: Caller) -> None:
    async with two_servers(health_check_interval_s=0.05) as (vllms, url):
        vllms[0].script.down = DropConnection()
        answers = [await caller.responses(url, {"input": f"task {n}"}) for n in range(4)]
        assert all(answer.status == 200 for answer in answers)
        assert {server_of(answer.cookie) for answer in answers} == {1}
        vllms[0].script.down = None
        # Once its /health answers again, new sessions reach it again.
        for _ in range(400):
            answer = await caller.responses(url, {"input": "new task"})
            if server_of(answer.cookie) == 0:
                break
            await asyncio.sleep(0.01)
        assert server_of(answer.cookie) == 0 and answer.status == 200


async def test_two_servers_still_retry_a_transient_503(servers: Servers, caller: Caller) -> None:
    async with two_servers() as (vllms, url):
        first = await caller.responses(url, {"input": "hi"})
        home = vllms[server_of(first.cookie)]
        home.script.inject(HttpFault(503))
        answer = await caller.responses(url, {"input": "again"}, cookie=first.cookie)
    assert answer.status == 200, answer.text


# --- the official openai client -------------------------------------------------------------------------


async def test_the_openai_client_works_against_the_model_server(
    servers: Servers,
) -> None:
    script = StandinScript(tool_call_mode=True, reasoning_text="Use the tool.")
    async with servers(script) as (vllm, url):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="caller-key", max_retries=0)
        async with client:
            tool = cast(Any, WEATHER_TOOL)
            first = await client.responses.create(model="anything", input="Weather in SF?", tools=[tool])
            call = first.output[-1]
            assert call.type == "function_call" and call.name == "get_weather"
            assert orjson.loads(call.arguments) == {"city": "SF"}
            assert first.output[0].type == "reasoning"
            history: list[Any] = [
                {"role": "user", "content": "Weather in SF?"},
                *(item.model_dump(exclude_none=True) for item in first.output),
                {"type": "function_call_output", "call_id": call.call_id, "output": '{"weather": "sunny"}'},
            ]
            second = await client.responses.create(model="anything", input=history, tools=[tool])
            assert second.output_text == "It is sunny in SF." and second.status == "completed"
            assert second.usage is not None and second.usage.input_tokens > 0

            models = await client.models.list()
            assert [model.id for model in models.data] == [MODEL]

            chat = await client.chat.completions.create(
                model="anything",
                messages=[{"role": "user", "content": "Weather in SF?"}],
                tools=[cast(Any, CHAT_WEATHER_TOOL)],
            )
            message = chat.choices[0].message
            assert message.tool_calls is not None
            call_made = message.tool_calls[0]
            assert isinstance(call_made, ChatCompletionMessageFunctionToolCall)
            assert call_made.function.name == "get_weather" and chat.choices[0].finish_reason == "tool_calls"
            assert message.content == "<think>Use the tool.</think>"
        # The caller's key is not forwarded: vLLM sees the configured one.
        assert set(vllm.log.header_values("authorization")) == {f"Bearer {API_KEY}"}
