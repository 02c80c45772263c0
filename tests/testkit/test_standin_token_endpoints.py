"""The stand-in's token routes (render, generate, derender) answer like vLLM 0.32 with --enable-scale-out
(tests/data/vllm_recordings/{render,generate,derender}_*.json) and behave like its chat route."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ngym.vllm.process import HttpResult, http_request
from testkit.recordings.record import load_recording, shape_mismatches
from testkit.standin.script import Delay, DropConnection, HttpFault, StandinScript
from testkit.standin.server import StandinServer
from testkit.standin.tokens import DERENDER_PATH, GENERATE_PATH, RENDER_PATH
from testkit.standin.wire import EOS_ID, fake_tokenize

RECORDINGS = Path(__file__).resolve().parents[1] / "data" / "vllm_recordings"
REAL_EOS_ID = 2  # <|im_end|> in the tiny model's vocabulary
MODEL = "tiny-qwen2"
HELLO = [{"role": "user", "content": "Hello!"}]
LOGPROBS = {"logprobs": True, "top_logprobs": 0}


def recording(name: str) -> dict[str, Any]:
    return load_recording(name, RECORDINGS)


def tools() -> list[dict[str, Any]]:
    tool_list: list[dict[str, Any]] = recording("render_tool_call")["request"]["body"]["tools"]
    return tool_list


@pytest.fixture(scope="module")
def shared_standin() -> Iterator[StandinServer]:
    with StandinServer() as server:
        yield server


@pytest.fixture
def standin(shared_standin: StandinServer) -> StandinServer:
    shared_standin.script = StandinScript()
    return shared_standin


def post(server: StandinServer, path: str, body: Any, **headers: str) -> HttpResult:
    return http_request(server.root_url + path, method="POST", body=body, headers=headers, timeout=10)


def assert_shape(name: str, result: HttpResult) -> dict[str, Any]:
    expected = recording(name)["response"]
    assert result.status == expected["status"], result.body
    assert result.headers.get("content-type") == expected["headers"]["content-type"]
    actual: dict[str, Any] = result.json()
    assert shape_mismatches(expected["body"], actual) == []
    return actual


def drop_eos(generated: dict[str, Any]) -> dict[str, Any]:
    """What a client sends derender: the generation without the end-of-sequence id (and its log-prob)."""
    choice = dict(generated["choices"][0])
    if choice["finish_reason"] == "stop":
        choice["token_ids"] = choice["token_ids"][:-1]
        if choice["logprobs"]:
            choice["logprobs"] = {"content": choice["logprobs"]["content"][:-1]}
    return {**generated, "choices": [choice]}


def derender_body(chat_request: dict[str, Any], generated: dict[str, Any], prompt: list[int]) -> dict[str, Any]:
    return {
        "model": MODEL,
        "generate_response": generated,
        "chat_request": chat_request,
        "prompt_token_ids": prompt,
        "prompt_tokens": len(prompt),
    }


def token_round_trip(server: StandinServer, chat_request: dict[str, Any]) -> tuple[dict, dict, dict]:
    rendered = post(server, RENDER_PATH, chat_request).json()
    generated = post(server, GENERATE_PATH, rendered).json()
    derendered = post(server, DERENDER_PATH, derender_body(chat_request, drop_eos(generated), rendered["token_ids"]))
    return rendered, generated, derendered.json()


def set_tool_mode(script: StandinScript) -> None:
    script.tool_call_mode = True


def set_reasoning(script: StandinScript) -> None:
    script.reasoning_text = "The user asks about the weather."


def set_small_context(script: StandinScript) -> None:
    script.max_model_len = 1024


def set_api_key(script: StandinScript) -> None:
    script.api_key = "test-key"


def set_no_scale_out(script: StandinScript) -> None:
    script.api_key = "test-key"
    script.scale_out = False


def no_change(script: StandinScript) -> None:
    return None


# -- the recorded shapes -----------------------------------------------------------------------------------------
CHAINS: list[tuple[str, Callable[[StandinScript], None]]] = [
    ("text_reply", no_change),
    ("tool_call", set_tool_mode),
    ("reasoning", set_reasoning),
    ("max_tokens", no_change),
]


@pytest.mark.parametrize(("name", "configure"), CHAINS, ids=[c[0] for c in CHAINS])
def test_render_generate_derender_answer_in_the_recorded_shapes(
    standin: StandinServer, name: str, configure: Callable[[StandinScript], None]
) -> None:
    configure(standin.script)
    rendered = assert_shape(
        f"render_{name}", post(standin, RENDER_PATH, recording(f"render_{name}")["request"]["body"])
    )

    # The recorded generate request holds the real tokenizer's IDs: send the stand-in's own prompt instead.
    generate_request = {**recording(f"generate_{name}")["request"]["body"], "token_ids": rendered["token_ids"]}
    generated = assert_shape(f"generate_{name}", post(standin, GENERATE_PATH, generate_request))
    real_choice = recording(f"generate_{name}")["response"]["body"]["choices"][0]
    choice = generated["choices"][0]
    assert choice["finish_reason"] == real_choice["finish_reason"]
    assert (choice["token_ids"][-1] == EOS_ID) == (real_choice["token_ids"][-1] == REAL_EOS_ID)

    for derender_name, generation in ((f"derender_{name}", generated), (f"derender_{name}_without_eos", None)):
        if not (RECORDINGS / f"{derender_name}.json").exists():
            continue
        body = {
            **recording(derender_name)["request"]["body"],
            "generate_response": generation or drop_eos(generated),
            "prompt_token_ids": rendered["token_ids"],
            "prompt_tokens": len(rendered["token_ids"]),
        }
        derendered = assert_shape(derender_name, post(standin, DERENDER_PATH, body))
        real_message = recording(derender_name)["response"]["body"]["choices"][0]["message"]
        message = derendered["choices"][0]["message"]
        assert str(message["content"]).endswith("<|im_end|>") == str(real_message["content"]).endswith("<|im_end|>")


RENDER_SHAPES: list[tuple[str, Callable[[StandinScript], None]]] = [
    ("render_after_tool_result", set_tool_mode),
    ("render_history_with_reasoning", no_change),
    ("render_greedy_clamped", no_change),
    ("render_no_max_tokens", no_change),
]


@pytest.mark.parametrize(("name", "configure"), RENDER_SHAPES, ids=[c[0] for c in RENDER_SHAPES])
def test_render_answers_in_the_recorded_shape(
    standin: StandinServer, name: str, configure: Callable[[StandinScript], None]
) -> None:
    configure(standin.script)
    rendered = assert_shape(name, post(standin, RENDER_PATH, recording(name)["request"]["body"]))
    assert rendered["reasoning_ended"] == recording(name)["response"]["body"]["reasoning_ended"]


EXACT_ERRORS: list[tuple[str, Callable[[StandinScript], None]]] = [
    ("render_unknown_model", no_change),
    ("render_context_length_error", set_small_context),
    ("render_max_tokens_over_max_model_len", set_small_context),
    ("generate_unknown_model", no_change),
    ("generate_missing_token_ids", no_change),
    ("generate_empty_token_ids", no_change),
    ("generate_prompt_too_long", set_small_context),
    ("generate_out_of_vocabulary", no_change),
    ("derender_unknown_model", no_change),
    ("derender_without_chat_request", no_change),
    ("derender_empty_token_ids", no_change),
    ("derender_missing_generate_response", no_change),
    ("render_without_scale_out", set_no_scale_out),
    ("generate_without_scale_out", set_no_scale_out),
    ("unauthorized_generate", set_api_key),
]


@pytest.mark.parametrize(("name", "configure"), EXACT_ERRORS, ids=[c[0] for c in EXACT_ERRORS])
def test_error_answers_equal_the_recording(
    standin: StandinServer, name: str, configure: Callable[[StandinScript], None]
) -> None:
    configure(standin.script)
    request = recording(name)["request"]
    result = post(standin, request["path"], request["body"], **request["headers"])
    expected = recording(name)["response"]
    assert result.status == expected["status"]
    assert result.json() == expected["body"]


def test_the_recordings_cover_the_cases_checked_here() -> None:
    names = {p.stem for p in RECORDINGS.glob("*.json")}
    chains = {f"{step}_{name}" for name, _ in CHAINS for step in ("render", "generate", "derender")}
    assert chains | {n for n, _ in RENDER_SHAPES + EXACT_ERRORS} <= names


def test_recorded_vllm_facts_the_standin_relies_on() -> None:
    generated = recording("generate_text_reply")["response"]["body"]["choices"][0]
    assert generated["finish_reason"] == "stop" and generated["token_ids"][-1] == REAL_EOS_ID
    assert len(generated["logprobs"]["content"]) == len(generated["token_ids"])
    cut = recording("generate_max_tokens")["response"]["body"]["choices"][0]
    assert cut["finish_reason"] == "length" and REAL_EOS_ID not in cut["token_ids"]
    assert len(cut["token_ids"]) == recording("render_max_tokens")["response"]["body"]["sampling_params"]["max_tokens"]
    with_eos = recording("derender_text_reply")["response"]["body"]["choices"][0]["message"]
    without_eos = recording("derender_text_reply_without_eos")["response"]["body"]["choices"][0]["message"]
    assert with_eos["content"] == without_eos["content"] + "<|im_end|>"
    tool_choice = recording("derender_tool_call")["response"]["body"]["choices"][0]
    assert tool_choice["finish_reason"] == "stop" and tool_choice["message"]["tool_calls"]
    clamped = recording("render_greedy_clamped")["response"]["body"]
    assert clamped["sampling_params"]["max_tokens"] == 1024 - len(clamped["token_ids"]) < 100


# -- behaviour -----------------------------------------------------------------------------------------------
def test_render_is_consistent_with_tokenize_and_the_chat_route(standin: StandinServer) -> None:
    request = {"model": MODEL, "messages": HELLO, "tools": tools()}
    rendered = post(standin, RENDER_PATH, request).json()
    tokenized = post(standin, "/tokenize", {**request, "add_generation_prompt": True}).json()
    chat = post(standin, "/v1/chat/completions", {**request, "return_token_ids": True}).json()
    assert rendered["token_ids"] == tokenized["tokens"] == chat["prompt_token_ids"]
    without_prompt = post(standin, RENDER_PATH, {**request, "add_generation_prompt": False}).json()
    assert rendered["token_ids"] == without_prompt["token_ids"] + fake_tokenize("<|im_start|>assistant\n")


ROUND_TRIPS: list[tuple[str, Callable[[StandinScript], None], list[dict[str, Any]]]] = [
    ("text", no_change, HELLO),
    ("reasoning", set_reasoning, HELLO),
    ("tool_call", set_tool_mode, HELLO),
    (
        "after_tool_result",
        set_tool_mode,
        [
            *HELLO,
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "SF"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"weather_description": "sunny"}'},
        ],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "configure", "messages"), ROUND_TRIPS, ids=[c[0] for c in ROUND_TRIPS])
def test_render_generate_derender_gives_the_chat_routes_answer(
    standin: StandinServer, name: str, configure: Callable[[StandinScript], None], messages: list[dict[str, Any]]
) -> None:
    configure(standin.script)
    request = {"model": MODEL, "messages": messages, "tools": tools(), **LOGPROBS}
    rendered, generated, derendered = token_round_trip(standin, request)
    chat = post(standin, "/v1/chat/completions", {**request, "return_token_ids": True}).json()["choices"][0]

    gen_choice, message = generated["choices"][0], derendered["choices"][0]["message"]
    assert gen_choice["token_ids"] == chat["token_ids"] and gen_choice["token_ids"][-1] == EOS_ID
    assert [e["logprob"] for e in gen_choice["logprobs"]["content"]] == [
        e["logprob"] for e in chat["logprobs"]["content"]
    ]
    calls, chat_calls = message.pop("tool_calls", []), chat["message"].pop("tool_calls", [])
    assert message == chat["message"]
    assert [c["function"] for c in calls] == [c["function"] for c in chat_calls]
    assert all(len(c["id"]) == 16 for c in calls)  # vLLM's derender: bare random hex, no chatcmpl-tool- prefix
    # derender keeps generate's finish_reason; only the chat route says tool_calls.
    assert derendered["choices"][0]["finish_reason"] == "stop"
    assert chat["finish_reason"] == ("tool_calls" if calls else "stop")
    assert derendered["usage"]["prompt_tokens"] == len(rendered["token_ids"])


def test_derender_keeps_the_end_of_sequence_token_as_text_like_vllm(standin: StandinServer) -> None:
    request = {"model": MODEL, "messages": HELLO}
    rendered = post(standin, RENDER_PATH, request).json()
    generated = post(standin, GENERATE_PATH, rendered).json()
    derendered = post(standin, DERENDER_PATH, derender_body(request, generated, rendered["token_ids"])).json()
    assert derendered["choices"][0]["message"]["content"] == standin.script.reply_text + "<|im_end|>"


def test_generate_honours_max_tokens_and_the_context(standin: StandinServer) -> None:
    rendered = post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO, "max_tokens": 4, **LOGPROBS}).json()
    assert rendered["sampling_params"]["max_tokens"] == 4
    choice = post(standin, GENERATE_PATH, rendered).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["token_ids"]) == len(choice["logprobs"]["content"]) == 4 and EOS_ID not in choice["token_ids"]
    assert choice["weight_versions"] == [{"version": "default", "start": 0, "end": 4}]

    standin.script.max_model_len = len(rendered["token_ids"]) + 6
    unbounded = {**rendered, "sampling_params": {"max_tokens": 1000}}
    assert post(standin, GENERATE_PATH, unbounded).json()["usage"]["completion_tokens"] == 6
    no_max = {**rendered, "sampling_params": {}}
    assert post(standin, GENERATE_PATH, no_max).json()["usage"]["completion_tokens"] == 6


def test_render_clamps_max_tokens_to_the_room_left(standin: StandinServer) -> None:
    prompt = post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO}).json()["token_ids"]
    standin.script.max_model_len = len(prompt) + 10
    for asked, expected in ((None, 10), (5, 5), (len(prompt) + 10, 10)):  # max_tokens up to max_model_len
        body = {"model": MODEL, "messages": HELLO, **({} if asked is None else {"max_tokens": asked})}
        assert post(standin, RENDER_PATH, body).json()["sampling_params"]["max_tokens"] == expected
    assert (
        post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO, "max_completion_tokens": 3}).json()[
            "sampling_params"
        ]["max_tokens"]
        == 3
    )

    standin.script.max_model_len = len(prompt)
    full = post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO})
    assert full.status == 400 and full.json()["error"]["param"] == "max_tokens"
    assert post(standin, GENERATE_PATH, {"token_ids": prompt, "sampling_params": {}}).status == 400
    standin.script.max_model_len = len(prompt) - 1
    assert post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO}).json()["error"]["param"] == "input_tokens"


def test_rendered_history_splices_onto_the_previous_turn(standin: StandinServer) -> None:
    standin.script.tool_call_mode = True
    standin.script.reasoning_text = "I need the weather tool."
    first = {"model": MODEL, "messages": HELLO, "tools": tools()}
    rendered, generated, derendered = token_round_trip(standin, first)
    message = derendered["choices"][0]["message"]
    history = [
        *HELLO,
        {"role": "assistant", "content": message["content"], "reasoning": message["reasoning"],
         "tool_calls": message["tool_calls"]},
        {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "sunny"},
    ]  # fmt: skip
    second = post(standin, RENDER_PATH, {**first, "messages": history}).json()["token_ids"]
    turn = [*rendered["token_ids"], *generated["choices"][0]["token_ids"]]
    assert second[: len(turn)] == turn
    tool_turn = fake_tokenize("\n<|im_start|>tool\n<tool_response>\nsunny\n</tool_response>")
    assert second[len(turn) :] == [*tool_turn, EOS_ID, *fake_tokenize("\n<|im_start|>assistant\n")]


def test_reasoning_ended_follows_the_last_think_marker(standin: StandinServer) -> None:
    history = [
        *HELLO,
        {"role": "assistant", "content": "Hi", "reasoning": "greeting"},
        {"role": "user", "content": "?"},
    ]
    assert post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO}).json()["reasoning_ended"] is False
    assert post(standin, RENDER_PATH, {"model": MODEL, "messages": history}).json()["reasoning_ended"] is True
    no_reasoning = {"model": MODEL, "messages": HELLO, "include_reasoning": False}
    assert post(standin, RENDER_PATH, no_reasoning).json()["reasoning_ended"] is True
    standin.script.reasoning_parser = False
    rendered = post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO}).json()
    assert rendered["reasoning_ended"] is None and rendered["reasoning_parser_kwargs"] is None


def test_tool_choice_none_generates_no_call(standin: StandinServer) -> None:
    standin.script.tool_call_mode = True
    request = {"model": MODEL, "messages": HELLO, "tools": tools(), "tool_choice": "none"}
    rendered, _, derendered = token_round_trip(standin, request)
    assert "skip_special_tokens" not in rendered["sampling_params"]
    assert derendered["choices"][0]["message"]["content"] == standin.script.reply_text


def test_sampling_params_follow_the_request(standin: StandinServer) -> None:
    body = {"model": MODEL, "messages": HELLO, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "seed": 3, "stop": "x"}
    params = post(standin, RENDER_PATH, {**body, "n": 2, "logprobs": True, "top_logprobs": 2}).json()["sampling_params"]
    assert params["n"] == 2 and params["temperature"] == 0.5 and params["top_p"] == 0.9 and params["top_k"] == 5
    assert params["seed"] == 3 and params["stop"] == ["x"] and params["logprobs"] == 2
    greedy = post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO, "temperature": 0}).json()
    assert "top_p" not in greedy["sampling_params"] and "logprobs" not in greedy["sampling_params"]
    streamed = post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO, "stream": True}).json()
    assert streamed["stream"] is True and streamed["sampling_params"]["output_kind"] == 1


def test_generate_cache_follows_the_script(standin: StandinServer) -> None:
    rendered = post(standin, RENDER_PATH, {"model": MODEL, "messages": HELLO, **LOGPROBS}).json()
    first, again = (post(standin, GENERATE_PATH, rendered).json() for _ in range(2))
    assert first["choices"] == again["choices"] and first["request_id"] == again["request_id"]
    standin.script.reply_text = "Changed."
    changed = post(standin, GENERATE_PATH, rendered).json()["choices"][0]["token_ids"]
    assert changed == [*fake_tokenize("<think></think>Changed."), EOS_ID]
    plain = post(standin, GENERATE_PATH, {**rendered, "sampling_params": {}}).json()["choices"][0]
    assert plain["token_ids"] == changed and plain["logprobs"] is None
    two = post(standin, GENERATE_PATH, {**rendered, "sampling_params": {"n": 2}}).json()
    assert [c["index"] for c in two["choices"]] == [0, 1] and two["usage"]["completion_tokens"] == 2 * len(changed)


def test_request_ids_come_from_the_header_or_the_body(standin: StandinServer) -> None:
    request = {"model": MODEL, "messages": HELLO}
    rendered = post(standin, RENDER_PATH, request, **{"X-Request-Id": "abc"}).json()
    assert rendered["request_id"] == "chatcmpl-abc"
    assert post(standin, GENERATE_PATH, rendered).json()["request_id"] == "generate-tokens-chatcmpl-abc"
    assert post(standin, GENERATE_PATH, rendered, **{"X-Request-Id": "h"}).json()["request_id"] == "generate-tokens-h"


# -- faults and refusals -------------------------------------------------------------------------------------
def rendered_hello(server: StandinServer) -> dict[str, Any]:
    body: dict[str, Any] = post(server, RENDER_PATH, {"model": MODEL, "messages": HELLO}).json()
    return body


@pytest.mark.parametrize("status", [429, 500, 503, 400])
def test_injected_http_errors_apply_to_generate_once(standin: StandinServer, status: int) -> None:
    rendered = rendered_hello(standin)
    standin.script.inject(HttpFault(status))
    result = post(standin, GENERATE_PATH, rendered)
    assert result.status == status
    assert list(result.json()["error"]) == ["message", "type", "param", "code"]
    assert post(standin, GENERATE_PATH, rendered).status == 200


def test_queued_faults_are_left_to_model_calls(standin: StandinServer) -> None:
    standin.script.inject(HttpFault(503))
    rendered = rendered_hello(standin)  # render and derender are no model calls: the fault waits for generate
    generation = {"choices": [{"index": 0, "token_ids": fake_tokenize("Hi")}]}
    chat_request = {"model": MODEL, "messages": HELLO}
    assert post(standin, DERENDER_PATH, derender_body(chat_request, generation, [])).status == 200
    assert post(standin, GENERATE_PATH, rendered).status == 503


def test_dropped_connection_on_generate_sends_nothing(standin: StandinServer) -> None:
    rendered = rendered_hello(standin)
    standin.script.inject(DropConnection())
    conn = http.client.HTTPConnection(standin.host, standin.port, timeout=5)
    conn.request("POST", GENERATE_PATH, json.dumps(rendered), {"Content-Type": "application/json"})
    with pytest.raises(http.client.RemoteDisconnected):
        conn.getresponse()
    assert post(standin, GENERATE_PATH, rendered).status == 200


def test_delay_then_generate(standin: StandinServer) -> None:
    rendered = rendered_hello(standin)
    standin.script.inject(Delay(0.3))
    started = time.monotonic()
    assert post(standin, GENERATE_PATH, rendered).status == 200
    assert time.monotonic() - started >= 0.3


def test_down_api_key_and_scale_out_apply_to_every_token_route(standin: StandinServer) -> None:
    rendered = rendered_hello(standin)
    chat_request = {"model": MODEL, "messages": HELLO}
    generated = drop_eos(post(standin, GENERATE_PATH, rendered).json())
    bodies = {
        RENDER_PATH: chat_request,
        GENERATE_PATH: rendered,
        DERENDER_PATH: derender_body(chat_request, generated, rendered["token_ids"]),
    }
    standin.script.down = HttpFault(503)
    assert {post(standin, path, body).status for path, body in bodies.items()} == {503}
    standin.script.down = None
    standin.script.api_key = "k"
    assert {post(standin, path, body).status for path, body in bodies.items()} == {401}
    key = {"Authorization": "Bearer k"}
    assert {post(standin, path, body, **key).status for path, body in bodies.items()} == {200}
    standin.script.scale_out = False
    refused = [post(standin, path, body, **key) for path, body in bodies.items()]
    assert {r.status for r in refused} == {403}
    assert {r.json()["error"]["type"] for r in refused} == {"PermissionDeniedError"}


def test_bad_bodies_are_refused_like_vllm(standin: StandinServer) -> None:
    rendered = rendered_hello(standin)
    conn = http.client.HTTPConnection(standin.host, standin.port, timeout=5)
    conn.request("POST", GENERATE_PATH, "{not json", {"Content-Type": "application/json"})
    answer = conn.getresponse()
    error = json.loads(answer.read())["error"]
    assert answer.status == 400 and error["param"] == "body.1" and "JSON decode error" in error["message"]
    strings = post(standin, GENERATE_PATH, {**rendered, "token_ids": ["a", 1]}).json()["error"]
    assert strings["param"] == "body.token_ids.0" and "int_type" in strings["message"]
    negative = post(standin, GENERATE_PATH, {**rendered, "token_ids": [-1]}).json()["error"]
    assert "token_ids must not contain negative values" in negative["message"]
    assert post(standin, GENERATE_PATH, {**rendered, "stream": True}).status == 501
    greedy_n = {**rendered, "sampling_params": {"n": 2, "temperature": 0.0}}
    assert (
        post(standin, GENERATE_PATH, greedy_n).json()["error"]["message"]
        == "n must be 1 when using greedy sampling, got 2."
    )
    assert post(standin, RENDER_PATH, {"model": MODEL, "messages": "hi"}).json()["error"]["param"] == "body.messages"
    choices_missing = post(standin, DERENDER_PATH, {"generate_response": {}, "chat_request": {}})
    assert choices_missing.status == 400
