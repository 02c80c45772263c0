"""Every route of the three servers (vllm_model, simple_agent, simple_weather), sent malformed bodies: the answer
is always below 500 in the OpenAI error shape naming the field, and the server serves a valid request afterwards.

The servers run in this process over real HTTP, the model server in front of the scripted vLLM stand-in. A body
is a valid one with one change at any depth: a value replaced by any JSON value, a key removed or added, or the
body not JSON at all. Before the boundary checks, simple_weather's /verify answered 500 with tracebacks
(`'list' object has no attribute 'get'`) and the agent's /run crashed on an `input` that is a number.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngym.http.app import serve_in_background
from resources_servers.simple_weather.app import SimpleWeather, weather_description
from responses_api_agents.simple_agent.app import SimpleAgent
from responses_api_models.vllm_model.app import VllmModel
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer
from testkit.tiny_model import SERVED_MODEL_NAME

ROOT = Path(__file__).resolve().parents[2]
ROW = json.loads((ROOT / "resources_servers/simple_weather/data/example.jsonl").read_text().splitlines()[0])
ANSWER = f"Here you go: {weather_description('SF')}"
TOOLS = ROW["responses_create_params"]["tools"]
RESPONSE = {
    "id": "resp_1",
    "status": "completed",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "SF"}'},
        {"type": "function_call_output", "call_id": "c1", "output": '{"weather_description": "x"}'},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ANSWER}]},
    ],
}
CHAT = {
    "model": SERVED_MODEL_NAME,
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather in sf?"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    "temperature": 0.5,
    "max_tokens": 20,
}
RESPONSES = {**ROW["responses_create_params"], "model": SERVED_MODEL_NAME, "max_output_tokens": 20}

# (server, route, a valid body)
ROUTES = [
    ("model", "/v1/responses", RESPONSES),
    ("model", "/v1/chat/completions", CHAT),
    ("agent", "/v1/responses", RESPONSES),
    ("agent", "/run", ROW),
    ("weather", "/seed_session", ROW),
    ("weather", "/verify", {**ROW, "response": RESPONSE}),
    ("weather", "/get_weather", {"city": "SF"}),
]

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@dataclass
class Stack:
    urls: dict[str, str]
    http: aiohttp.ClientSession
    loop: asyncio.AbstractEventLoop | None = None


def _address(section: dict[str, Any], url: str) -> None:
    parts = urlsplit(url)
    section["host"], section["port"] = parts.hostname, parts.port


@contextlib.asynccontextmanager
async def serve_stack() -> AsyncIterator[Stack]:
    script = StandinScript(tool_call_mode=True, tool_answer_text=ANSWER)
    async with StandinServer(script) as vllm:
        config: dict[str, Any] = {
            "policy_model": {
                "responses_api_models": {
                    "vllm_model": {"entrypoint": "app.py", "base_url": vllm.base_url, "model": SERVED_MODEL_NAME}
                }
            },
            "simple_weather": {"resources_servers": {"simple_weather": {"entrypoint": "app.py"}}},
            "simple_agent": {
                "responses_api_agents": {
                    "simple_agent": {
                        "entrypoint": "app.py",
                        "resources_server": {"type": "resources_servers", "name": "simple_weather"},
                        "model_server": {"type": "responses_api_models", "name": "policy_model"},
                    }
                }
            },
        }
        weather = SimpleWeather.from_config(config, "simple_weather")
        model = VllmModel.from_config(config, "policy_model")
        async with serve_in_background(weather.app()) as weather_url, serve_in_background(model.app()) as model_url:
            _address(config["simple_weather"]["resources_servers"]["simple_weather"], weather_url)
            _address(config["policy_model"]["responses_api_models"]["vllm_model"], model_url)
            agent = SimpleAgent.from_config(config, "simple_agent")
            async with serve_in_background(agent.app()) as agent_url, aiohttp.ClientSession() as http:
                yield Stack({"model": model_url, "weather": weather_url, "agent": agent_url}, http)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The servers on an event loop of their own thread, so that hypothesis drives plain (sync) tests."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    serving = serve_stack()
    running = asyncio.run_coroutine_threadsafe(serving.__aenter__(), loop).result(timeout=60)
    running.loop = loop
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(serving.__aexit__(None, None, None), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a JSON value: the root, each key of each object, each index of each list."""
    found = [at]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*at, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*at, index))
    return found


@st.composite
def malformed(draw: st.DrawFn, body: dict[str, Any]) -> bytes:
    """A valid body with one change somewhere, or bytes that are not a JSON object at all."""
    kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40) | JSON_VALUES.filter(lambda v: not isinstance(v, dict)).map(orjson.dumps))
    changed = copy.deepcopy(body)
    at = draw(st.sampled_from(paths(changed)))
    if not at:
        return orjson.dumps(draw(JSON_VALUES))
    parent = changed
    for part in at[:-1]:
        parent = parent[part]
    if kind == "replace":
        parent[at[-1]] = draw(JSON_VALUES)
    elif kind == "delete":
        del parent[at[-1]]
    elif isinstance(parent[at[-1]], dict):
        parent[at[-1]][draw(st.text(min_size=1, max_size=8))] = draw(JSON_VALUES)
    else:
        parent[at[-1]] = {"unexpected": draw(JSON_VALUES)}
    return orjson.dumps(changed)


def post(stack: Stack, server: str, route: str, data: bytes) -> tuple[int, Any]:
    async def send() -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        async with stack.http.post(stack.urls[server] + route, data=data, headers=headers) as resp:
            return resp.status, await resp.read()

    assert stack.loop is not None
    status, raw = asyncio.run_coroutine_threadsafe(send(), stack.loop).result(timeout=120)  # a hang guard
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, raw


def assert_clear_refusal_or_answer(status: int, answer: Any, sent: bytes) -> None:
    assert status < 500, (status, answer, sent[:300])
    if status < 400:
        return
    error = answer.get("error") if isinstance(answer, dict) else None
    assert isinstance(error, dict), answer
    assert isinstance(error.get("message"), str) and error["message"], answer
    assert isinstance(error.get("type"), str), answer
    try:
        parsed = orjson.loads(sent)
    except orjson.JSONDecodeError:
        return  # nothing to name but the body: "not valid JSON"
    if isinstance(parsed, dict):
        assert error.get("param"), f"a refused field must be named: {answer}"


@pytest.mark.parametrize(("server", "route", "body"), ROUTES, ids=[f"{s}{r}" for s, r, _ in ROUTES])
def test_malformed_bodies_get_a_clear_4xx_and_the_server_keeps_serving(
    stack: Stack, server: str, route: str, body: dict[str, Any]
) -> None:
    valid = orjson.dumps(body)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(malformed(body))
    def check(sent: bytes) -> None:
        assert_clear_refusal_or_answer(*post(stack, server, route, sent), sent)

    check()
    status, answer = post(stack, server, route, valid)
    assert status == 200, answer


@pytest.mark.parametrize(("server", "route", "body"), ROUTES, ids=[f"{s}{r}" for s, r, _ in ROUTES])
@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"{",
        b'{"a": 1}' + b"x",
        b"[" * 5000 + b"]" * 5000,
        orjson.dumps({"input": "x" * 2_000_000}),
        b"\xff\xfe",
        b'{"n": 123456789012345678901234567890}',
        b'{"temperature": ' + b"[" * 300 + b"]" * 300 + b"}",
    ],
    ids=["empty", "cut", "trailing-junk", "deep", "2MB", "not-utf8", "int-over-64-bits", "deep-under-a-field"],
)
def test_bodies_that_are_not_a_task_at_all(
    stack: Stack, server: str, route: str, body: dict[str, Any], sent: bytes
) -> None:
    assert_clear_refusal_or_answer(*post(stack, server, route, sent), sent)
    status, answer = post(stack, server, route, orjson.dumps(body))
    assert status == 200, answer


def test_a_2mb_value_at_every_string_of_a_valid_body_is_refused_or_served(stack: Stack) -> None:
    for server, route, body in ROUTES:
        for at in paths(body):
            if not at or not isinstance(_get(body, at), str):
                continue
            changed = copy.deepcopy(body)
            _get(changed, at[:-1])[at[-1]] = "y" * 2_000_000
            sent = orjson.dumps(changed)
            assert_clear_refusal_or_answer(*post(stack, server, route, sent), sent)


def _get(value: Any, at: tuple[Any, ...]) -> Any:
    for part in at:
        value = value[part]
    return value
