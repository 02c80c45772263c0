"""simple_agent over HTTP: the real simple_weather and vllm_model servers in front of the scripted vLLM stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from ngym.http.app import serve_in_background
from ngym.servers.resources import SeedSessionRequest
from resources_servers.simple_weather.app import (
    GetWeatherRequest,
    GetWeatherResponse,
    SimpleWeather,
    VerifyRequest,
    weather_description,
)
from responses_api_agents.simple_agent.app import SimpleAgent
from responses_api_models.vllm_model.app import VllmModel
from testkit.standin.script import Delay, HttpFault, StandinScript
from testkit.standin.server import StandinServer
from testkit.tiny_model import SERVED_MODEL_NAME

EXAMPLE = Path(__file__).resolve().parents[3] / "resources_servers/simple_weather/data/example.jsonl"
ROWS = [json.loads(line) for line in EXAMPLE.read_text().splitlines() if line.strip()]
SF_ROW = ROWS[0]  # "what's it like in sf?", expected_city "sf"
GOOD_ANSWER = f"Here you go: {weather_description('SF')}"
CRASHING_CITY = "Atlantis"


class RecordingWeather(SimpleWeather):
    """The real simple_weather, noting which session each of its calls belonged to."""

    calls: list[tuple[str, str]]

    async def seed_session(self, body: SeedSessionRequest, session_id: str) -> dict[str, Any]:
        self.calls.append(("seed_session", session_id))
        return await super().seed_session(body, session_id)

    async def get_weather(self, body: GetWeatherRequest, session_id: str) -> GetWeatherResponse:
        self.calls.append(("get_weather", session_id))
        if body.city == CRASHING_CITY:
            raise RuntimeError("the weather service is down")
        return await super().get_weather(body, session_id)

    async def verify(self, body: VerifyRequest, session_id: str) -> dict[str, Any]:
        self.calls.append(("verify", session_id))
        return await super().verify(body, session_id)


@dataclass
class Stack:
    vllm: StandinServer
    weather: RecordingWeather
    config: dict[str, Any]
    agent_url: str

    def use(self, script: StandinScript) -> StandinScript:
        self.vllm.script = script
        self.weather.calls = []
        return script


def with_address(section: dict[str, Any], url: str) -> None:
    parts = urlsplit(url)
    section["host"], section["port"] = parts.hostname, parts.port


def agent_config(config: dict[str, Any], max_steps: int | None) -> dict[str, Any]:
    section = {
        "entrypoint": "app.py",
        "resources_server": {"type": "resources_servers", "name": "simple_weather"},
        "model_server": {"type": "responses_api_models", "name": "policy_model"},
        "max_steps": max_steps,
    }
    return {**copy.deepcopy(config), "simple_agent": {"responses_api_agents": {"simple_agent": section}}}


@contextlib.asynccontextmanager
async def serve_agent(config: dict[str, Any], max_steps: int | None = 10) -> AsyncIterator[str]:
    agent = SimpleAgent.from_config(agent_config(config, max_steps), "simple_agent")
    async with serve_in_background(agent.app()) as url:
        yield url


@pytest.fixture(scope="module")
async def shared_stack() -> AsyncIterator[Stack]:
    async with StandinServer(StandinScript()) as vllm:
        model_section = {"entrypoint": "app.py", "base_url": vllm.base_url, "model": SERVED_MODEL_NAME}
        config: dict[str, Any] = {
            "policy_model": {"responses_api_models": {"vllm_model": {**model_section, "max_retries": 1}}},
            "simple_weather": {"resources_servers": {"simple_weather": {"entrypoint": "app.py"}}},
        }
        weather = RecordingWeather.from_config(config, "simple_weather")
        weather.calls = []
        model = VllmModel.from_config(config, "policy_model")
        async with serve_in_background(weather.app()) as weather_url, serve_in_background(model.app()) as model_url:
            with_address(config["simple_weather"]["resources_servers"]["simple_weather"], weather_url)
            with_address(config["policy_model"]["responses_api_models"]["vllm_model"], model_url)
            async with serve_agent(config) as agent_url:
                yield Stack(vllm, weather, config, agent_url)


@pytest.fixture
def stack(shared_stack: Stack) -> Iterator[Stack]:
    shared_stack.use(StandinScript(tool_call_mode=True, tool_answer_text=GOOD_ANSWER))
    yield shared_stack


async def post(url: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


def tool_message_contents(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def scripted_call(arguments: str) -> dict[str, Any]:
    """vLLM's answer with one get_weather call whose arguments are exactly `arguments`."""
    call = {"id": "call-1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    message = {"role": "assistant", "content": None, "tool_calls": [call], "reasoning": None}
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": SERVED_MODEL_NAME,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


async def test_run_returns_the_verify_body_with_reward_and_full_output(stack: Stack) -> None:
    status, body = await post(stack.agent_url + "/run", SF_ROW)
    assert status == 200, body
    assert body["reward"] == 1.0, body["reason"]
    assert body["responses_create_params"] == SF_ROW["responses_create_params"]
    assert body["expected_city"] == "sf" and body["called_city"] == "SF"

    response = body["response"]
    assert response["object"] == "response" and response["status"] == "completed"
    call, output, final = response["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert orjson.loads(call["arguments"]) == {"city": "SF"}
    assert output == {"type": "function_call_output", "call_id": call["call_id"], "output": output["output"]}
    assert orjson.loads(output["output"]) == {"city": "SF", "weather_description": weather_description("SF")}
    assert final["type"] == "message" and final["content"][0]["text"] == GOOD_ANSWER

    # The model saw the tool's answer on its second turn.
    first, second = stack.vllm.log.bodies()
    assert tool_message_contents(first) == []
    assert [orjson.loads(text) for text in tool_message_contents(second)] == [orjson.loads(output["output"])]
    assert [name for name, _ in stack.weather.calls] == ["seed_session", "get_weather", "verify"]


async def test_agent_responses_endpoint_runs_the_loop_without_scoring(stack: Stack) -> None:
    status, response = await post(stack.agent_url + "/v1/responses", SF_ROW["responses_create_params"])
    assert status == 200, response
    assert "reward" not in response
    assert [item["type"] for item in response["output"]] == ["function_call", "function_call_output", "message"]
    assert response["output"][-1]["content"][0]["text"] == GOOD_ANSWER


@pytest.mark.parametrize(
    ("arguments", "error"),
    [('{"city": "S', "not valid JSON"), ('["SF"]', "must be a JSON object")],
    ids=["invalid-json", "not-an-object"],
)
async def test_malformed_tool_arguments_become_an_error_output_for_the_model(
    stack: Stack, arguments: str, error: str
) -> None:
    stack.vllm.script.inject(HttpFault(200, scripted_call(arguments)))
    status, body = await post(stack.agent_url + "/run", SF_ROW)
    assert status == 200, body
    call, output, final = body["response"]["output"]
    assert call["arguments"] == arguments
    assert output["type"] == "function_call_output" and output["call_id"] == "call-1"
    assert error in orjson.loads(output["output"])["error"]
    assert final["type"] == "message"
    assert body["reward"] == 0.0  # scored: the rollout finished, the model just did badly
    assert tool_message_contents(stack.vllm.log.last_body()) == [output["output"]]
    assert "get_weather" not in [name for name, _ in stack.weather.calls]  # never sent to the tool


@pytest.mark.parametrize(
    ("tool_name", "arguments", "expected"),
    [
        ("get_weather", {"town": "SF"}, "city"),
        ("get_forecast", {"city": "SF"}, "'get_forecast' is not a tool of this request (its tools: get_weather)"),
        ("verify", {"city": "SF"}, "'verify' is not a tool of this request"),
        ("seed_session", {}, "'seed_session' is not a tool of this request"),
    ],
    ids=["bad-arguments-422", "undeclared-tool", "control-route-verify", "control-route-seed_session"],
)
async def test_a_tool_error_body_goes_back_to_the_model(
    stack: Stack, tool_name: str, arguments: dict[str, Any], expected: str
) -> None:
    stack.vllm.script.tool_name = tool_name
    stack.vllm.script.tool_arguments = arguments
    status, body = await post(stack.agent_url + "/run", SF_ROW)
    assert status == 200, body
    call, output, final = body["response"]["output"]
    assert call["name"] == tool_name and expected in output["output"]
    assert final["type"] == "message" and body["reward"] == 0.0
    assert tool_message_contents(stack.vllm.log.last_body()) == [output["output"]]
    if tool_name != "get_weather":  # never sent: the resources server saw its own seed and verify only
        assert [name for name, _ in stack.weather.calls] == ["seed_session", "verify"]


async def test_max_steps_stops_the_loop(stack: Stack) -> None:
    async with serve_agent(stack.config, max_steps=1) as agent_url:
        status, body = await post(agent_url + "/run", SF_ROW)
    assert status == 200, body
    assert stack.vllm.log.count() == 1
    output = body["response"]["output"]
    assert output[0]["type"] == "function_call"
    assert all(item["type"] != "message" for item in output)
    assert body["reward"] == 0.0


async def test_an_incomplete_response_stops_the_loop(stack: Stack) -> None:
    params = {**SF_ROW["responses_create_params"], "max_output_tokens": 3}
    status, body = await post(stack.agent_url + "/run", {**SF_ROW, "responses_create_params": params})
    assert status == 200, body
    assert body["response"]["status"] == "incomplete" and stack.vllm.log.count() == 1


async def test_a_model_server_failure_fails_the_run_without_a_reward(stack: Stack) -> None:
    stack.vllm.script.down = HttpFault(500)
    status, body = await post(stack.agent_url + "/run", SF_ROW)
    assert status >= 500
    assert "reward" not in body
    assert "/v1/responses" in body["error"]["message"] and "500" in body["error"]["message"]
    assert "verify" not in [name for name, _ in stack.weather.calls]


async def test_a_failing_tool_server_fails_the_run_without_a_reward(stack: Stack) -> None:
    stack.vllm.script.tool_arguments = {"city": CRASHING_CITY}
    status, body = await post(stack.agent_url + "/run", SF_ROW)
    assert status >= 500
    assert "reward" not in body
    assert "get_weather" in body["error"]["message"] and "500" in body["error"]["message"]
    assert stack.vllm.log.count() == 1  # the model never saw a made-up tool answer
    assert "verify" not in [name for name, _ in stack.weather.calls]


async def test_a_bad_task_row_is_a_4xx(stack: Stack) -> None:
    status, body = await post(stack.agent_url + "/run", {"input": "no responses_create_params"})
    assert status == 422 and body["error"]["param"] == "responses_create_params"


async def test_concurrent_runs_keep_their_own_session_cookies(stack: Stack) -> None:
    paris = ROWS[1]
    stack.vllm.script.inject(Delay(0.05), Delay(0.05))  # both first turns are in flight at once
    results = await asyncio.gather(post(stack.agent_url + "/run", SF_ROW), post(stack.agent_url + "/run", paris))
    assert [status for status, _ in results] == [200, 200]

    # Model server: each rollout's turns share one session (X-Session-ID), and the two rollouts differ.
    by_rollout: dict[str, set[str | None]] = {}
    for entry in stack.vllm.log.requests():
        question = entry.json()["messages"][1]["content"]
        by_rollout.setdefault(question, set()).add(entry.headers.get("x-session-id"))
    assert len(by_rollout) == 2 and all(len(ids) == 1 and None not in ids for ids in by_rollout.values())
    first, second = (ids.pop() for ids in by_rollout.values())
    assert first != second
    assert stack.vllm.log.count() == 4

    # Resources server: seed, tool and verify of one rollout share its session; the two rollouts differ.
    sessions: dict[str, list[str]] = {}
    for name, session_id in stack.weather.calls:
        sessions.setdefault(session_id, []).append(name)
    assert sorted(map(sorted, sessions.values())) == [["get_weather", "seed_session", "verify"]] * 2


@pytest.mark.parametrize(
    ("bad_input", "message"),
    [
        (5, "invalid task row at responses_create_params.input: Input should be a valid string or a valid list"),
        ([{"role": "wizard", "content": "hi"}], "at responses_create_params.input[0].role: Input should be 'user'"),
        ([{"type": "mystery_item"}], "model server /v1/responses at"),
    ],
    ids=["input-is-a-number", "a-role-no-model-has", "input-the-model-server-rejects"],
)
async def test_a_task_the_servers_reject_is_a_4xx_not_a_rollout_failure(
    stack: Stack, bad_input: Any, message: str
) -> None:
    row = {**SF_ROW, "responses_create_params": {**SF_ROW["responses_create_params"], "input": bad_input}}
    status, body = await post(stack.agent_url + "/run", row)
    assert status == 422, body
    assert message in body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"].startswith("responses_create_params.input"), body
    if "model server" in message:
        assert "rejected the task (HTTP 422)" in body["error"]["message"] and "mystery_item" in body["error"]["message"]
