"""The vllm_model server against real vLLM: tool calls, reasoning and token IDs as vLLM produced them,
api keys, and several vLLM servers with one killed mid-run.

Structured outputs make the random tiny model emit exactly the text a test needs; logprobs stay real."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ngym.http.app import serve_in_background
from ngym.protocol.options import ConversionOptions
from ngym.protocol.requests import responses_to_chat_request
from ngym.protocol.tokens import add_token_request_flags
from ngym.servers.base import StartupError
from ngym.vllm.process import VllmServer
from responses_api_models.vllm_model.app import VllmModel
from responses_api_models.vllm_model.chat_path import ChatPath
from testkit.forcing import literal_regex

pytestmark = pytest.mark.vllm

API_KEY = "sk-ngym-test-key"
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    }
]
TOOL_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call>'
TOOL_OUTPUT = json.dumps({"city": "SF", "weather_description": "The weather in SF is sunny."})


def model_config(base_url: str | list[str], model: str, **settings: Any) -> dict[str, Any]:
    section = {"entrypoint": "app.py", "base_url": base_url, "model": model, **settings}
    return {"policy_model": {"responses_api_models": {"vllm_model": section}}}


@asynccontextmanager
async def model_server(config: dict[str, Any]) -> AsyncIterator[tuple[str, VllmModel]]:
    server = VllmModel.from_config(config, "policy_model")
    async with serve_in_background(server.app()) as url:
        yield url, server


def forced(text: str) -> dict[str, Any]:
    """Request fields that make vLLM emit exactly `text` (passed through the Responses API untouched)."""
    return {"structured_outputs": {"regex": literal_regex(text)}, "max_output_tokens": 300, "seed": 7}


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
        return dict(answer)


def tokenize(vllm: VllmServer, body: dict[str, Any]) -> list[int]:
    chat = responses_to_chat_request(body, vllm.model_name, ConversionOptions())
    request = {"model": vllm.model_name, "messages": chat["messages"], "add_generation_prompt": True}
    if "tools" in chat:
        request["tools"] = chat["tools"]
    return list(vllm.request("POST", "/tokenize", request).json()["tokens"])


async def test_multi_step_tool_rollout_carries_vllm_token_ids(vllm_server: VllmServer) -> None:
    # The chat path: each turn's prompt IDs are vLLM's rendering of the history (test_token_exact_real.py has
    # the token-exact path).
    config = model_config(
        vllm_server.base_url, vllm_server.model_name, return_token_id_information=True, token_exact="never"
    )
    history: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in SF?"}]
    async with model_server(config) as (url, _server), aiohttp.ClientSession() as http:
        first_request = {"input": history, "tools": TOOLS, **forced("</think>" + TOOL_CALL)}
        first = await post(http, url + "/v1/responses", first_request)
        calls = [item for item in first["output"] if item["type"] == "function_call"]
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", {"city": "SF"})]
        last = first["output"][-1]
        assert last["prompt_token_ids"] == tokenize(vllm_server, {"input": history, "tools": TOOLS})
        assert len(last["generation_token_ids"]) == len(last["generation_log_probs"]) > 0

        # The same request straight to vLLM (greedy under the grammar, same seed) generates the same IDs.
        direct = responses_to_chat_request(first_request, vllm_server.model_name, ConversionOptions(
            return_token_id_information=True))  # fmt: skip
        direct["max_tokens"] = 300
        add_token_request_flags(direct)
        straight = vllm_server.request("POST", "/v1/chat/completions", direct).json()
        assert straight["choices"][0]["token_ids"] == last["generation_token_ids"]
        assert straight["prompt_token_ids"] == last["prompt_token_ids"]

        history = [*history, *first["output"], {"type": "function_call_output", "call_id": calls[0]["call_id"],
                                                "output": TOOL_OUTPUT}]  # fmt: skip
        second = await post(http, url + "/v1/responses", {"input": history, "tools": TOOLS,
                                                          **forced("</think>The weather in SF is sunny.")})  # fmt: skip
    message = second["output"][-1]
    assert message["type"] == "message"
    assert message["content"][0]["text"] == "The weather in SF is sunny."
    assert message["prompt_token_ids"] == tokenize(vllm_server, {"input": history, "tools": TOOLS})
    assert len(message["generation_token_ids"]) == len(message["generation_log_probs"]) > 0
    # The turn-1 IDs travel back on the turn-1 item unchanged.
    assert history[len(history) - 2]["generation_token_ids"] == last["generation_token_ids"]


async def test_reasoning_parser_output_becomes_a_reasoning_item(vllm_server: VllmServer) -> None:
    config = model_config(vllm_server.base_url, vllm_server.model_name)
    text = "<think>The user asks about the weather.</think>It is sunny in SF."
    async with model_server(config) as (url, _server), aiohttp.ClientSession() as http:
        answer = await post(http, url + "/v1/responses", {"input": "Weather in SF?", **forced(text)})
        chat = await post(http, url + "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "Weather in SF?"}],
            "structured_outputs": {"regex": literal_regex(text)}, "max_tokens": 300, "seed": 7})  # fmt: skip
    kinds = [item["type"] for item in answer["output"]]
    assert kinds == ["reasoning", "message"]
    assert answer["output"][0]["summary"] == [{"type": "summary_text", "text": "The user asks about the weather."}]
    assert answer["output"][1]["content"][0]["text"] == "It is sunny in SF."
    assert (
        chat["choices"][0]["message"]["content"] == "<think>The user asks about the weather.</think>It is sunny in SF."
    )


async def test_context_overflow_is_an_incomplete_response(vllm_server: VllmServer) -> None:
    config = model_config(vllm_server.base_url, vllm_server.model_name)
    async with model_server(config) as (url, _server), aiohttp.ClientSession() as http:
        answer = await post(http, url + "/v1/responses", {"input": "weather " * 1500})
    assert answer["status"] == "incomplete"
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.fixture(scope="module")
def keyed_vllm_server(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """A second real vLLM, started with --api-key; the last test of this module kills it."""
    server = VllmServer(vllm_server.model_dir, python=vllm_server.python, served_model_name=vllm_server.model_name,
                        api_key=API_KEY, log_path=tmp_path_factory.mktemp("keyed") / "vllm.log")  # fmt: skip
    with server:
        yield server


async def test_api_key_is_sent_and_a_wrong_key_is_refused_at_start_up(
    keyed_vllm_server: VllmServer, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    good = model_config(keyed_vllm_server.base_url, keyed_vllm_server.model_name, api_key=API_KEY)
    async with model_server(good) as (url, _server), aiohttp.ClientSession() as http:
        answer = await post(http, url + "/v1/responses", {"input": "hi", "max_output_tokens": 5})
        assert answer["status"] in ("completed", "incomplete")
    wrong = model_config(keyed_vllm_server.base_url, keyed_vllm_server.model_name, api_key="sk-wrong-key")
    server = VllmModel.from_config(wrong, "policy_model")
    with pytest.raises(StartupError) as info:
        await server.open()
    assert "refused the api_key (HTTP 401)" in str(info.value)
    assert "sk-wrong-key" not in str(info.value)
    captured = capsys.readouterr()
    assert "sk-wrong-key" not in caplog.text + captured.out + captured.err
    assert API_KEY not in caplog.text + captured.out + captured.err


async def test_a_vllm_without_token_endpoints_gets_the_chat_path_with_a_warning_or_is_refused(
    keyed_vllm_server: VllmServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = keyed_vllm_server.base_url
    auto = model_config(url, keyed_vllm_server.model_name, api_key=API_KEY, return_token_id_information=True)
    async with model_server(auto) as (address, server), aiohttp.ClientSession() as http:
        answer = await post(http, address + "/v1/responses", {"input": "hi", "max_output_tokens": 3})
    assert isinstance(server.path, ChatPath)
    assert answer["output"][-1]["prompt_token_ids"]
    warning = capsys.readouterr().err
    assert "--enable-scale-out" in warning and url in warning and "/v1/chat/completions/render" in warning
    assert API_KEY not in warning

    required = model_config(url, keyed_vllm_server.model_name, api_key=API_KEY, return_token_id_information=True,
                            token_exact="require")  # fmt: skip
    with pytest.raises(StartupError) as info:
        await VllmModel.from_config(required, "policy_model").open()
    assert "token_exact: require" in str(info.value) and "--enable-scale-out" in str(info.value)
    assert url in str(info.value)


async def test_sessions_stay_on_one_server_and_move_when_it_dies(
    vllm_server: VllmServer, keyed_vllm_server: VllmServer
) -> None:
    urls = [vllm_server.base_url, keyed_vllm_server.base_url]
    config = model_config(urls, vllm_server.model_name, api_key=API_KEY, max_retries=1, health_check_interval_s=0.5)
    sessions = 12
    async with model_server(config) as (url, server):
        jars = [aiohttp.CookieJar(unsafe=True) for _ in range(sessions)]

        async def turn(index: int) -> str:
            async with aiohttp.ClientSession(cookie_jar=jars[index]) as http:
                await post(http, url + "/v1/responses", {"input": f"session {index}", "max_output_tokens": 4})
            cookie = next(c for c in jars[index] if c.key == "ngym_upstream")
            return cookie.value.rsplit(".", 1)[1]

        first = await asyncio.gather(*(turn(i) for i in range(sessions)))
        assert set(first) == {"0", "1"}, "new sessions must use both servers"
        assert await asyncio.gather(*(turn(i) for i in range(sessions))) == first, "sessions must stay put"

        keyed_vllm_server.stop()
        moved = await asyncio.gather(*(turn(i) for i in range(sessions)))
        assert moved == ["0"] * sessions, "every session must finish on the surviving server"
        assert not server.pool.upstreams[1].healthy


def test_recordings_are_from_the_vllm_we_test_against(vllm_server: VllmServer) -> None:
    recording = json.loads((Path(__file__).parents[1] / "data/vllm_recordings/models.json").read_text())
    version = vllm_server.request("GET", "/version").json()["version"]
    assert recording["vllm_version"] == version


async def test_vllm_servers_shows_real_vllms_own_load_and_metrics_count_its_tokens(vllm_server: VllmServer) -> None:
    """`/vllm_servers` reads real vLLM's /metrics (running, waiting, KV cache, prefix cache); `/metrics` counts the
    turn and the tokens vLLM reported for it."""
    config = model_config(vllm_server.base_url, vllm_server.model_name)
    async with model_server(config) as (url, _server), aiohttp.ClientSession() as http:
        answer = await post(http, url + "/v1/chat/completions", {
            "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5,
            "structured_outputs": {"regex": "</think>hi"}, "seed": 7,
        })  # fmt: skip
        async with http.get(url + "/vllm_servers") as resp:
            (entry,) = (await resp.json())["vllm_servers"]
        async with http.get(url + "/metrics") as resp:
            exposition = await resp.text()
    assert entry["url"] == vllm_server.base_url and entry["in_rotation"] is True and entry["in_flight"] == 0
    assert entry["vllm_unavailable"] is None
    load = entry["vllm"]
    assert load["running"] == 0 and load["waiting"] == 0
    assert 0 <= load["kv_cache_usage"] <= 1
    assert load["prefix_cache_hit_rate"] is None or 0 <= load["prefix_cache_hit_rate"] <= 1
    assert entry["turns"] == {"chat": 1}
    assert entry["prompt_tokens"] == answer["usage"]["prompt_tokens"] > 0
    labels = f'path="chat",vllm="{vllm_server.base_url}"'
    assert f"ngym_vllm_completion_tokens_total{{{labels}}} {float(answer['usage']['completion_tokens'])}" in exposition
