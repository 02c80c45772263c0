"""openai_model over HTTP, in front of the scripted vLLM stand-in (an OpenAI-compatible API that can be made to
fail on demand): what reaches the API, what comes back, the start-up check and every failure's answer. Both
routes on real vLLM, as a NeMo Gym environment's judge: tests/nemo_gym_envs/test_real_vllm.py."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ngym.config.errors import ConfigError
from ngym.http.app import serve_in_background
from ngym.servers.base import StartupError
from responses_api_models.openai_model.app import OpenAIModel
from testkit.standin.script import DropConnection, Hold, HttpFault, StandinScript
from testkit.standin.server import StandinServer
from testkit.standin.wire import vllm_error_body

API_KEY = "sk-ngym-judge-3c9d1e7a55"
JUDGE_MODEL = "judge-model-name"


def judge_config(base_url: str, **options: Any) -> dict[str, Any]:
    section = {"entrypoint": "app.py", "openai_base_url": base_url, "openai_api_key": API_KEY,
               "openai_model": JUDGE_MODEL, **options}  # fmt: skip
    return {"judge_model": {"responses_api_models": {"openai_model": section}}}


@contextlib.asynccontextmanager
async def judge(script: StandinScript | None = None, **options: Any) -> AsyncIterator[tuple[StandinServer, str]]:
    """A stand-in serving JUDGE_MODEL behind API_KEY, and openai_model in front of it; yields both."""
    script = script or StandinScript(model=JUDGE_MODEL, api_key=API_KEY)
    async with StandinServer(script) as api:
        server = OpenAIModel.from_config(judge_config(api.base_url, **options), "judge_model")
        async with serve_in_background(server.app()) as url:
            yield api, url


async def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        return resp.status, await resp.json()


CHAT = {"model": "whatever-the-caller-says", "messages": [{"role": "user", "content": "Is 2+2=4?"}]}


async def test_chat_completion_reaches_the_api_with_the_configured_model_key_headers_and_extra_body() -> None:
    options: dict[str, Any] = {
        "extra_body": {"temperature": 0.0, "top_k": 5},
        "openai_default_headers": {"X-Team": "rl"},
    }
    async with judge(**options) as (api, url):
        status, answer = await post(url + "/v1/chat/completions", {**CHAT, "temperature": 0.7})
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == api.script.reply_text
    (sent,) = [entry for entry in api.script.log.entries if entry.path == "/v1/chat/completions"]
    body = sent.json()
    assert body["model"] == JUDGE_MODEL and body["messages"] == CHAT["messages"]
    assert body["temperature"] == 0.7 and body["top_k"] == 5  # the caller's fields over extra_body
    assert sent.headers["authorization"] == f"Bearer {API_KEY}" and sent.headers["x-team"] == "rl"


async def test_no_key_sends_no_authorization() -> None:
    async with judge(StandinScript(model=JUDGE_MODEL), openai_api_key=None) as (api, url):
        status, _ = await post(url + "/v1/chat/completions", CHAT)
    assert status == 200
    assert all("authorization" not in entry.headers for entry in api.script.log.entries)


async def test_models_lists_the_configured_model() -> None:
    async with judge() as (_api, url), aiohttp.ClientSession() as http, http.get(url + "/v1/models") as resp:
        answer = await resp.json()
    assert [model["id"] for model in answer["data"]] == [JUDGE_MODEL]


async def test_a_refused_key_is_a_502_naming_the_key_setting_never_the_key() -> None:
    async with judge(startup_check=False) as (api, url):
        api.script.inject(HttpFault(401))
        status, answer = await post(url + "/v1/chat/completions", CHAT)
    assert status == 502 and "openai_api_key" in answer["error"]["message"]
    assert API_KEY not in orjson.dumps(answer).decode()


async def test_the_apis_own_4xx_is_the_callers_with_the_field_it_names() -> None:
    async with judge() as (api, url):
        api.script.inject(HttpFault(400, vllm_error_body(400, "temperature must be >= 0", "temperature")))
        status, answer = await post(url + "/v1/chat/completions", CHAT)
    assert status == 400 and answer["error"]["param"] == "temperature"
    assert "temperature must be >= 0" in answer["error"]["message"] and api.base_url in answer["error"]["message"]


async def test_5xx_is_retried_max_http_attempts_times_then_a_502() -> None:
    async with judge(max_http_attempts=2) as (api, url):
        api.script.inject(HttpFault(503), HttpFault(503))
        status, answer = await post(url + "/v1/chat/completions", CHAT)
        assert status == 502 and "HTTP 503" in answer["error"]["message"]
        assert api.script.log.counts["/v1/chat/completions"] == 2
        api.script.inject(HttpFault(500))
        status, answer = await post(url + "/v1/chat/completions", CHAT)  # one failure, then an answer
    assert status == 200, answer


async def test_a_dropped_connection_and_an_unreachable_api_are_502s_naming_the_url() -> None:
    async with judge() as (api, url):
        api.script.inject(*[DropConnection()] * 5)
        status, answer = await post(url + "/v1/chat/completions", CHAT)
    assert status == 502 and api.base_url in answer["error"]["message"]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{free.getsockname()[1]}/v1"
    server = OpenAIModel.from_config(judge_config(dead, startup_check=False), "judge_model")
    async with serve_in_background(server.app()) as url:
        status, answer = await post(url + "/v1/chat/completions", CHAT)
    assert status == 502 and dead in answer["error"]["message"] and "cannot connect" in answer["error"]["message"]


async def test_streaming_is_refused_with_the_field() -> None:
    async with judge() as (_api, url):
        status, answer = await post(url + "/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 422 and answer["error"]["param"] == "stream"


async def test_max_concurrent_requests_caps_what_is_in_flight_at_the_api() -> None:
    hold = Hold()
    async with judge(max_concurrent_requests=2) as (api, url):
        api.script.inject(hold, hold, hold)
        calls = [asyncio.create_task(post(url + "/v1/chat/completions", CHAT)) for _ in range(3)]
        await asyncio.to_thread(hold.wait_for_held, 2)
        assert api.script.log.counts["/v1/chat/completions"] == 2
        hold.release()
        answers = await asyncio.gather(*calls)
    assert [status for status, _ in answers] == [200, 200, 200]


async def test_start_up_refuses_an_unreachable_api_or_a_refused_key_and_warns_of_an_unknown_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{free.getsockname()[1]}/v1"
    with pytest.raises(StartupError, match=r"does not answer.*openai_base_url"):
        async with serve_in_background(OpenAIModel.from_config(judge_config(dead), "judge_model").app()):
            pass
    async with StandinServer(StandinScript(model=JUDGE_MODEL, api_key="another-key")) as api:
        with pytest.raises(StartupError, match=r"refused the key.*openai_api_key") as refused:
            async with serve_in_background(OpenAIModel.from_config(judge_config(api.base_url), "judge_model").app()):
                pass
        assert API_KEY not in str(refused.value)
    async with StandinServer(StandinScript(model="some-other-model", api_key=API_KEY)) as api:
        async with serve_in_background(OpenAIModel.from_config(judge_config(api.base_url), "judge_model").app()):
            pass
    assert f"does not list the model '{JUDGE_MODEL}'" in capsys.readouterr().err


def test_a_missing_base_url_is_a_config_error_naming_the_key() -> None:
    config = judge_config("http://127.0.0.1:1/v1")
    config["judge_model"]["responses_api_models"]["openai_model"]["openai_base_url"] = None
    with pytest.raises(ConfigError, match=r"judge_model\.responses_api_models\.openai_model\.openai_base_url"):
        OpenAIModel.from_config(config, "judge_model")


async def test_responses_passes_the_body_through_and_can_drop_reasoning_items() -> None:
    """/v1/responses in front of an API that echoes what it got (the stand-in has no Responses route)."""

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"object": "response", "received": await request.json()})

    async def models(_request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": JUDGE_MODEL}]})

    api = Starlette(routes=[Route("/v1/responses", echo, methods=["POST"]), Route("/v1/models", models)])
    said = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]}
    history: list[dict[str, Any]] = [{"role": "user", "content": "hi"}, {"type": "reasoning", "summary": []}, said]
    async with serve_in_background(api) as api_url:
        for drop in (False, True):
            config = judge_config(api_url + "/v1", drop_input_reasoning_items=drop, extra_body={"top_p": 0.5})
            async with serve_in_background(OpenAIModel.from_config(config, "judge_model").app()) as url:
                status, answer = await post(url + "/v1/responses", {"input": history, "max_output_tokens": 9})
            assert status == 200, answer
            expected = [item for item in history if item.get("type") != "reasoning"] if drop else history
            assert answer["received"] == {"top_p": 0.5, "input": expected, "max_output_tokens": 9,
                                          "model": JUDGE_MODEL}  # fmt: skip
