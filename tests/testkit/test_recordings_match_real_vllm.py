"""Real vLLM (CPU build) on the tiny model: the behaviour ngym relies on, and no drift from the recordings."""

from __future__ import annotations

from typing import Any

import pytest

from ngym.vllm.process import HttpResult, VllmServer
from testkit.forcing import literal_regex
from testkit.recordings.case import TOOL_CALL_TEXT, WEATHER_TOOLS
from testkit.recordings.record import load_recording, shape_mismatches
from testkit.tiny_model import SERVED_MODEL_NAME

pytestmark = pytest.mark.vllm

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in SF?"},
]
TOKEN_INFO = {"logprobs": True, "top_logprobs": 0, "return_token_ids": True, "return_tokens_as_token_ids": True}


def chat(server: VllmServer, **fields: Any) -> HttpResult:
    body = {"model": SERVED_MODEL_NAME, "messages": MESSAGES, "max_tokens": 16, **fields}
    return server.request("POST", "/v1/chat/completions", body)


def forced(text: str) -> dict[str, Any]:
    return {"structured_outputs": {"regex": literal_regex(text)}, "max_tokens": 200}


def test_chat_completion_works(vllm_server: VllmServer) -> None:
    result = chat(vllm_server)
    assert result.status == 200, result.body
    body = result.json()
    assert body["model"] == SERVED_MODEL_NAME
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    assert 0 < body["usage"]["completion_tokens"] <= 16


def test_token_ids_and_logprobs_come_back_with_equal_lengths(vllm_server: VllmServer) -> None:
    body = chat(vllm_server, **TOKEN_INFO, **forced("</think>Hello! How can I help you?")).json()
    choice = body["choices"][0]
    ids, logprobs = choice["token_ids"], choice["logprobs"]["content"]
    assert ids and len(ids) == len(logprobs) == body["usage"]["completion_tokens"]
    assert [entry["token"] for entry in logprobs] == [f"token_id:{i}" for i in ids]
    assert all(isinstance(entry["logprob"], float) and entry["logprob"] <= 0 for entry in logprobs)
    assert choice["message"]["content"] == "Hello! How can I help you?"
    assert isinstance(body["prompt_token_ids"], list) and body["prompt_token_ids"]


def test_tokenize_of_the_same_messages_equals_prompt_token_ids(vllm_server: VllmServer) -> None:
    body = chat(vllm_server, return_token_ids=True, max_tokens=2).json()
    tokenized = vllm_server.request(
        "POST", "/tokenize", {"model": SERVED_MODEL_NAME, "messages": MESSAGES, "add_generation_prompt": True}
    ).json()
    assert tokenized["tokens"] == body["prompt_token_ids"]
    assert tokenized["count"] == body["usage"]["prompt_tokens"]


def test_forced_tool_call_comes_back_as_tool_calls(vllm_server: VllmServer) -> None:
    # With the deepseek_r1 parser, text before </think> is reasoning: the call must follow a </think>.
    body = chat(vllm_server, tools=WEATHER_TOOLS, **forced("</think>" + TOOL_CALL_TEXT)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "SF"}'}
    assert choice["message"]["content"] is None


def test_forced_think_reply_is_split_by_the_reasoning_parser(vllm_server: VllmServer) -> None:
    body = chat(vllm_server, **forced("<think>Check the city.</think>It is sunny.")).json()
    message = body["choices"][0]["message"]
    assert message["reasoning"] == "Check the city."
    assert message["content"] == "It is sunny."
    assert "reasoning_content" not in message


@pytest.mark.parametrize(
    "name",
    [
        "health",
        "models",
        "chat_text_reply",
        "chat_token_ids",
        "chat_tool_call",
        "chat_reasoning",
        "chat_max_tokens",
        "chat_history_extra_fields",
        "tokenize_messages",
        "tokenize_history_extra_fields",
    ],
)
def test_live_answers_keep_the_recorded_shape(vllm_server: VllmServer, name: str) -> None:
    record = load_recording(name)
    request, expected = record["request"], record["response"]
    result = vllm_server.request(request["method"], request["path"], request["body"])
    assert result.status == expected["status"], result.body
    if "body" in expected:
        assert shape_mismatches(expected["body"], result.json()) == []


@pytest.mark.parametrize(
    "name", ["chat_context_length_error", "chat_max_tokens_over_max_model_len", "chat_unknown_model"]
)
def test_live_error_bodies_equal_the_recording(vllm_server: VllmServer, name: str) -> None:
    record = load_recording(name)
    request = record["request"]
    result = vllm_server.request(request["method"], request["path"], request["body"])
    assert result.status == record["response"]["status"]
    assert result.json() == record["response"]["body"]
