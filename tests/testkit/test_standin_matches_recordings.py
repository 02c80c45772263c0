"""The vLLM stand-in answers in the wire shapes real vLLM 0.32 produced (tests/data/vllm_recordings)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ngym.vllm.process import HttpResult, http_request
from testkit.recordings.record import load_recording, shape_mismatches
from testkit.standin.script import Delay, DropConnection, HttpFault, StandinScript, context_length_error
from testkit.standin.server import StandinServer
from testkit.standin.wire import render_chat

RECORDINGS = Path(__file__).resolve().parents[1] / "data" / "vllm_recordings"


def recording(name: str) -> dict[str, Any]:
    return load_recording(name, RECORDINGS)


def test_shape_comparison_catches_differences() -> None:
    assert shape_mismatches({"a": [1], "b": None}, {"a": [2, 3], "b": None}) == []
    assert shape_mismatches({"a": 1}, {"a": 1.0})
    assert shape_mismatches({"a": None}, {"a": "x"})
    assert shape_mismatches({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert shape_mismatches({"a": [{"x": 1}]}, {"a": [{"x": 1}, {"y": 1}]})
    assert shape_mismatches({"a": []}, {"a": [1]})


@pytest.fixture(scope="module")
def shared_standin() -> Iterator[StandinServer]:
    with StandinServer() as server:
        yield server


@pytest.fixture
def standin(shared_standin: StandinServer) -> StandinServer:
    shared_standin.script = StandinScript()
    return shared_standin


def replay(server: StandinServer, name: str) -> tuple[dict[str, Any], HttpResult]:
    rec = recording(name)
    req = rec["request"]
    result = http_request(
        server.root_url + req["path"], method=req["method"], body=req["body"], headers=req["headers"], timeout=10
    )
    return rec, result


def assert_matches(rec: dict[str, Any], result: HttpResult, *, exact: bool = False) -> None:
    expected = rec["response"]
    assert result.status == expected["status"], result.body
    for header, value in expected["headers"].items():
        assert result.headers.get(header) == value
    if "body_text" in expected:
        assert result.body.decode() == expected["body_text"]
        return
    actual = result.json()
    if exact:
        assert actual == expected["body"]
    else:
        assert shape_mismatches(expected["body"], actual) == []


def set_tool_mode(script: StandinScript) -> None:
    script.tool_call_mode = True


def set_reasoning(script: StandinScript) -> None:
    script.reasoning_text = "The user asks about the weather."


def set_no_parser(script: StandinScript) -> None:
    script.reasoning_parser = False
    script.api_key = "test-key"


def set_api_key(script: StandinScript) -> None:
    script.api_key = "test-key"


def set_small_context(script: StandinScript) -> None:
    script.max_model_len = 1024


def no_change(script: StandinScript) -> None:
    return None


SHAPE_CASES: list[tuple[str, Callable[[StandinScript], None]]] = [
    ("health", no_change),
    ("models", no_change),
    ("chat_text_reply", no_change),
    ("chat_token_ids", no_change),
    ("chat_logprobs_token_strings", no_change),
    ("chat_tool_call", set_tool_mode),
    ("chat_after_tool_result", set_tool_mode),
    ("chat_reasoning", set_reasoning),
    ("chat_max_tokens", no_change),
    ("chat_history_extra_fields", no_change),
    ("tokenize_messages", no_change),
    ("tokenize_prompt", no_change),
    ("tokenize_history_extra_fields", no_change),
    ("tokenize_history_reasoning_content_only", no_change),
    ("chat_text_reply_no_reasoning_parser", set_no_parser),
    ("health_with_api_key_server", set_api_key),
    ("tokenize_with_api_key_server", set_api_key),
]

EXACT_CASES: list[tuple[str, Callable[[StandinScript], None]]] = [
    ("chat_context_length_error", set_small_context),
    ("chat_max_tokens_over_max_model_len", set_small_context),
    ("chat_unknown_model", no_change),
    ("unauthorized_chat", set_api_key),
    ("unauthorized_models", set_api_key),
    ("unauthorized_no_key", set_api_key),
]


@pytest.mark.parametrize(("name", "configure"), SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_standin_answers_in_the_recorded_shape(
    standin: StandinServer, name: str, configure: Callable[[StandinScript], None]
) -> None:
    configure(standin.script)
    rec, result = replay(standin, name)
    assert_matches(rec, result)


@pytest.mark.parametrize(("name", "configure"), EXACT_CASES, ids=[c[0] for c in EXACT_CASES])
def test_standin_error_bodies_equal_the_recording(
    standin: StandinServer, name: str, configure: Callable[[StandinScript], None]
) -> None:
    configure(standin.script)
    rec, result = replay(standin, name)
    assert_matches(rec, result, exact=True)


def test_injected_context_length_error_equals_the_recording(standin: StandinServer) -> None:
    standin.script.inject(context_length_error(1024))
    _, result = replay(standin, "chat_text_reply")
    assert result.status == 400
    assert result.json() == recording("chat_context_length_error")["response"]["body"]


def test_the_recordings_cover_the_cases_the_standin_emulates() -> None:
    names = {p.stem for p in RECORDINGS.glob("*.json")}
    assert {n for n, _ in SHAPE_CASES + EXACT_CASES} <= names


def test_recorded_token_ids_and_logprobs_have_equal_lengths() -> None:
    for name in ("chat_token_ids", "chat_tool_call", "chat_reasoning", "chat_max_tokens"):
        body = recording(name)["response"]["body"]
        choice = body["choices"][0]
        assert len(choice["token_ids"]) == len(choice["logprobs"]["content"]) == body["usage"]["completion_tokens"]
        assert all(e["token"].startswith("token_id:") for e in choice["logprobs"]["content"])
    assert (
        recording("chat_token_ids")["response"]["body"]["prompt_token_ids"]
        == (recording("tokenize_messages")["response"]["body"]["tokens"])
    )


# -- stand-in behaviour the shape checks rely on ---------------------------------------------------------------
CHAT = {"model": "tiny-qwen2", "messages": [{"role": "user", "content": "Hi"}]}
TOKEN_INFO = {"logprobs": True, "top_logprobs": 0, "return_token_ids": True, "return_tokens_as_token_ids": True}


def post_chat(server: StandinServer, body: dict[str, Any], **headers: str) -> HttpResult:
    return http_request(server.base_url + "/chat/completions", method="POST", body=body, headers=headers, timeout=10)


def test_token_info_is_consistent_with_tokenize(standin: StandinServer) -> None:
    body = post_chat(standin, {**CHAT, **TOKEN_INFO}).json()
    choice = body["choices"][0]
    assert len(choice["token_ids"]) == len(choice["logprobs"]["content"]) == body["usage"]["completion_tokens"]
    assert [e["token"] for e in choice["logprobs"]["content"]] == [f"token_id:{i}" for i in choice["token_ids"]]
    tokenized = http_request(
        standin.root_url + "/tokenize", method="POST", body={"model": "tiny-qwen2", "messages": CHAT["messages"]}
    ).json()
    assert tokenized["tokens"] == body["prompt_token_ids"]
    assert choice["message"]["content"] == standin.script.reply_text


def test_fast_path_and_general_path_agree(standin: StandinServer) -> None:
    fast = post_chat(standin, CHAT).json()
    general = post_chat(standin, {**CHAT, "logprobs": False, "return_token_ids": False, "max_tokens": 1000}).json()
    with_ids = post_chat(standin, {**CHAT, "return_token_ids": True}).json()
    for other in (general, with_ids):
        assert fast["choices"][0]["message"] == other["choices"][0]["message"]
        assert fast["usage"] == other["usage"]
    standin.script.reply_text = "Changed."
    assert post_chat(standin, CHAT).json()["choices"][0]["message"]["content"] == "Changed."


def test_tool_call_mode_calls_then_answers(standin: StandinServer) -> None:
    standin.script.tool_call_mode = True
    tools = recording("chat_tool_call")["request"]["body"]["tools"]
    first = post_chat(standin, {**CHAT, "tools": tools}).json()["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    call = first["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "SF"}'}
    history = [
        *CHAT["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"weather_description": "sunny"}'},
    ]
    second = post_chat(standin, {**CHAT, "messages": history, "tools": tools}).json()["choices"][0]
    assert second["finish_reason"] == "stop"
    assert second["message"]["content"] == standin.script.tool_answer_text
    assert "tool_calls" not in second["message"]


def test_max_tokens_truncates_like_vllm(standin: StandinServer) -> None:
    choice = post_chat(standin, {**CHAT, **TOKEN_INFO, "max_tokens": 4}).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["token_ids"]) == 4
    assert standin.script.reply_text.startswith(choice["message"]["content"])


@pytest.mark.parametrize("status", [429, 500, 503, 400])
def test_injected_http_errors_use_vllms_error_body(standin: StandinServer, status: int) -> None:
    standin.script.inject(HttpFault(status))
    result = post_chat(standin, CHAT)
    assert result.status == status
    error = result.json()["error"]
    assert list(error) == ["message", "type", "param", "code"] and error["code"] == status
    assert post_chat(standin, CHAT).status == 200  # one fault per request


def test_dropped_connection_sends_nothing(standin: StandinServer) -> None:
    standin.script.inject(DropConnection())
    conn = http.client.HTTPConnection(standin.host, standin.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", json.dumps(CHAT), {"Content-Type": "application/json"})
    with pytest.raises(http.client.RemoteDisconnected):
        conn.getresponse()
    assert post_chat(standin, CHAT).status == 200


def test_delay_then_answer(standin: StandinServer) -> None:
    standin.script.inject(Delay(0.3))
    started = time.monotonic()
    assert post_chat(standin, CHAT).status == 200
    assert time.monotonic() - started >= 0.3


def test_down_applies_to_every_route_until_cleared(standin: StandinServer) -> None:
    standin.script.down = HttpFault(503)
    assert http_request(standin.root_url + "/health").status == 503
    assert post_chat(standin, CHAT).status == 503
    standin.script.down = None
    assert http_request(standin.root_url + "/health").status == 200


def test_request_log_keeps_bodies_and_session_headers(standin: StandinServer) -> None:
    post_chat(standin, CHAT, **{"X-Session-ID": "s-1"})
    post_chat(standin, {**CHAT, "max_tokens": 3}, **{"X-Session-ID": "s-2"})
    log = standin.script.log
    assert log.count() == 2
    assert log.session_ids() == ["s-1", "s-2"]
    assert log.last_body()["max_tokens"] == 3


async def test_async_context_manager_serves_on_the_running_loop() -> None:
    async with StandinServer() as server:
        # A raw socket read keeps the loop free to serve the request.
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await reader.read()
        writer.close()
    assert response.startswith(b"HTTP/1.1 200")
    with pytest.raises(OSError), socket.create_connection((server.host, server.port), timeout=1):
        pass


def test_render_chat_uses_reasoning_not_reasoning_content() -> None:
    # Mirrors vLLM 0.32: only `reasoning` on an assistant message reaches the chat template.
    with_reasoning = render_chat([{"role": "assistant", "content": "A", "reasoning": "r"}], add_generation_prompt=False)
    ignored = render_chat(
        [{"role": "assistant", "content": "A", "reasoning_content": "r"}], add_generation_prompt=False
    )
    assert "<think>r</think>A" in with_reasoning
    assert "<think>" not in ignored
