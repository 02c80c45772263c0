"""The token-exact path of vllm_model in front of the vLLM stand-in: which path start-up chooses, what reaches
vLLM's token endpoints, the splice over HTTP, and failures. Real vLLM: tests/integration/test_token_exact_real.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from ngym.http.app import serve_in_background
from ngym.protocol.splice import SpliceError
from ngym.servers.base import StartupError
from responses_api_models.vllm_model import template_lesson as splice_module
from responses_api_models.vllm_model.app import VllmModel
from responses_api_models.vllm_model.chat_path import ChatPath
from responses_api_models.vllm_model.exact_path import ExactTokenPath
from testkit.standin.script import DropConnection, HttpFault, StandinScript
from testkit.standin.server import StandinServer
from testkit.standin.wire import EOS_ID
from testkit.token_turns import TokenTurn, broken_turns, response_turns

MODEL = "tiny-qwen2"
RENDER, GENERATE, DERENDER = "/v1/chat/completions/render", "/inference/v1/generate", "/v1/chat/completions/derender"
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def config(base_url: str | list[str], **settings: Any) -> dict[str, Any]:
    section = {"entrypoint": "app.py", "base_url": base_url, "model": MODEL, "return_token_id_information": True}
    return {"policy_model": {"responses_api_models": {"vllm_model": {**section, **settings}}}}


@contextlib.asynccontextmanager
async def gym(
    script: StandinScript | None = None, **settings: Any
) -> AsyncIterator[tuple[StandinServer, VllmModel, str, aiohttp.ClientSession]]:
    async with StandinServer(script or StandinScript()) as vllm:
        server = VllmModel.from_config(config(vllm.base_url, **settings), "policy_model")
        async with serve_in_background(server.app()) as url, aiohttp.ClientSession() as http:
            yield vllm, server, url, http


def turn_calls(vllm: StandinServer, path: str) -> int:
    """Requests a turn made to `path` (start-up probes carry no session)."""
    return sum(1 for session in vllm.script.log.session_ids(path) if session)


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def second_turn_history(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    """A Chat history whose last assistant turn carries token data (the first turn is one chat completion)."""
    first = [{"role": "user", "content": "Hi"}]
    status, answer = await post(http, url + "/v1/chat/completions", {"messages": first})
    assert status == 200, answer
    return [*first, answer["choices"][0]["message"], {"role": "user", "content": "More"}]


async def test_auto_chooses_the_exact_path_when_the_endpoints_are_served() -> None:
    async with gym() as (vllm, server, url, http):
        assert isinstance(server.path, ExactTokenPath)
        status, first = await post(http, url + "/v1/responses", {"input": "Hi", "temperature": 0.5, "top_k": 3})
        assert status == 200, first
        # The first turn has nothing to splice: one chat completion.
        assert vllm.script.log.count("/v1/chat/completions") == 1 and turn_calls(vllm, GENERATE) == 0
        history = [{"role": "user", "content": "Hi"}, *first["output"], {"role": "user", "content": "More"}]
        status, second = await post(http, url + "/v1/responses", {"input": history})
    assert status == 200, second
    assert TokenTurn.of(first["output"][-1]).generation_token_ids[-1] == EOS_ID
    assert turn_calls(vllm, RENDER) == turn_calls(vllm, GENERATE) == turn_calls(vllm, DERENDER) == 1
    assert vllm.script.log.count("/v1/chat/completions") == 1
    assert broken_turns(response_turns([*first["output"], *second["output"]])) == []


async def test_auto_falls_back_to_the_chat_path_with_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    async with gym(StandinScript(scale_out=False)) as (vllm, server, url, http):
        assert isinstance(server.path, ChatPath)
        status, answer = await post(http, url + "/v1/responses", {"input": "Hi"})
    assert status == 200 and answer["output"][-1]["prompt_token_ids"]
    warning = capsys.readouterr().err
    assert warning.count("warning:") == 1
    assert "--enable-scale-out" in warning and vllm.base_url in warning


async def test_require_refuses_to_start_without_the_endpoints_naming_flag_and_url() -> None:
    async with StandinServer(StandinScript(scale_out=False)) as vllm:
        server = VllmModel.from_config(config(vllm.base_url, token_exact="require"), "policy_model")
        with pytest.raises(StartupError) as info:
            await server.open()
    message = str(info.value)
    assert "--enable-scale-out" in message and vllm.base_url in message and RENDER in message


async def test_never_and_plain_mode_use_the_chat_path() -> None:
    async with gym(token_exact="never") as (_vllm, server, _url, _http):
        assert isinstance(server.path, ChatPath)
    async with gym(return_token_id_information=False) as (vllm, server, _url, _http):
        assert isinstance(server.path, ChatPath)
        assert vllm.script.log.count(RENDER) == 0  # nothing probed when token data is off


def test_require_without_token_data_is_a_config_error() -> None:
    with pytest.raises(Exception, match="token_exact: require needs return_token_id_information: true"):
        VllmModel.from_config(
            config("http://127.0.0.1:1/v1", token_exact="require", return_token_id_information=False), "policy_model"
        )


async def test_a_responses_rollout_with_tool_calls_stays_token_exact() -> None:
    script = StandinScript(tool_call_mode=True)
    history: list[dict[str, Any]] = [{"role": "user", "content": "Weather in SF?"}]
    async with gym(script) as (vllm, _server, url, http):
        for _ in range(3):
            status, answer = await post(http, url + "/v1/responses", {"input": history, "tools": [TOOL]})
            assert status == 200, answer
            history += answer["output"]
            history += [
                {"type": "function_call_output", "call_id": item["call_id"], "output": '{"weather": "sunny"}'}
                for item in answer["output"]
                if item["type"] == "function_call"
            ]
        renders = vllm.script.log.bodies(RENDER)
    turns = response_turns(history)
    assert len(turns) == 3 and broken_turns(turns) == []
    assert [item.get("type") for item in history][1:3] == ["function_call", "function_call_output"]
    # What reaches render carries no token data; the anchoring turn is the marker.
    assert all("prompt_token_ids" not in orjson.dumps(body).decode() for body in renders)


async def test_sampling_fields_and_overrides_reach_render_and_the_flags_win() -> None:
    overrides = {"logprobs": False, "top_k": 5}
    async with gym(sampling_overrides=overrides, extra_body={"min_p": 0.1}) as (vllm, _server, url, http):
        body = {"messages": await second_turn_history(http, url), "temperature": 0.7, "top_p": 0.9, "stop": ["x"],
                "seed": 3, "repetition_penalty": 1.1, "max_tokens": 50}  # fmt: skip
        status, answer = await post(http, url + "/v1/chat/completions", body)
        render = vllm.script.log.last_body(RENDER)
    assert status == 200, answer
    for key, value in {"temperature": 0.7, "top_p": 0.9, "stop": ["x"], "seed": 3, "repetition_penalty": 1.1,
                       "max_tokens": 50, "top_k": 5, "min_p": 0.1}.items():  # fmt: skip
        assert render[key] == value, key
    assert render["logprobs"] is True and render["top_logprobs"] == 0
    message = answer["choices"][0]["message"]
    assert len(message["generation_token_ids"]) == len(message["generation_log_probs"]) > 0


async def test_max_tokens_is_worked_out_again_for_the_spliced_prompt() -> None:
    async with gym(StandinScript(max_model_len=400)) as (vllm, _server, url, http):
        first = [{"role": "user", "content": "Hi"}]
        status, answer = await post(http, url + "/v1/chat/completions", {"messages": first})
        assert status == 200, answer
        message = answer["choices"][0]["message"]
        used = len(message["prompt_token_ids"])
        # The next turn's prompt is the spliced one; the room it leaves caps max_tokens, as vLLM caps it.
        history = [*first, message, {"role": "user", "content": "More"}]
        status, answer = await post(http, url + "/v1/chat/completions", {"messages": history, "max_tokens": 390})
        assert status == 200, answer
        spliced = answer["choices"][0]["message"]["prompt_token_ids"]
        capped = vllm.script.log.last_body(GENERATE)["sampling_params"]["max_tokens"]
        status, answer = await post(http, url + "/v1/chat/completions", {"messages": history, "max_tokens": 10})
        sent = vllm.script.log.last_body(GENERATE)
    assert capped == 400 - len(spliced) < 390
    assert sent["token_ids"] == spliced and sent["sampling_params"]["max_tokens"] == 10
    assert (
        spliced[: used + len(message["generation_token_ids"])]
        == message["prompt_token_ids"] + message["generation_token_ids"]
    )


async def test_a_spliced_prompt_that_does_not_fit_is_an_incomplete_answer() -> None:
    script = StandinScript(max_model_len=200)
    async with gym(script) as (_vllm, _server, url, http):
        history: list[dict[str, Any]] = [{"role": "user", "content": "Hi"}]
        status, answer = await post(http, url + "/v1/chat/completions", {"messages": history})
        message = answer["choices"][0]["message"]
        # The model "saw" far more than the history shows: the spliced prompt overflows.
        message["prompt_token_ids"] = [65] * 190
        history += [message, {"role": "user", "content": "More"}]
        status, answer = await post(http, url + "/v1/chat/completions", {"messages": history})
    assert status == 200, answer
    assert answer["choices"][0]["finish_reason"] == "length" and answer["choices"][0]["message"]["content"] == ""


async def test_bad_token_data_in_history_is_a_422_naming_the_field() -> None:
    async with gym() as (_vllm, _server, url, http):
        turn = {"role": "assistant", "content": "x", "prompt_token_ids": [1, "2"], "generation_token_ids": [3],
                "generation_log_probs": [-1.0]}  # fmt: skip
        body = {"messages": [{"role": "user", "content": "Hi"}, turn, {"role": "user", "content": "?"}]}
        status, answer = await post(http, url + "/v1/chat/completions", body)
    assert status == 422
    assert "messages[1].prompt_token_ids" in answer["error"]["message"]


async def test_the_three_calls_of_a_turn_go_to_the_sessions_server() -> None:
    async with StandinServer(StandinScript()) as a, StandinServer(StandinScript()) as b:
        server = VllmModel.from_config(config([a.base_url, b.base_url]), "policy_model")
        async with serve_in_background(server.app()) as url:
            for index in range(6):
                async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                    history: list[dict[str, Any]] = [{"role": "user", "content": f"session {index}"}]
                    for _ in range(3):
                        status, answer = await post(http, url + "/v1/responses", {"input": history})
                        assert status == 200, answer
                        history += [*answer["output"], {"role": "user", "content": "More"}]
        for vllm in (a, b):
            ids = [[s for s in vllm.script.log.session_ids(path) if s] for path in (RENDER, GENERATE, DERENDER)]
            assert ids[0] == ids[1] == ids[2] and ids[0], "a turn's calls were split over servers"
            # Each session's first turn (a chat completion) was on the same server as its later turns.
            assert set(vllm.script.log.session_ids("/v1/chat/completions")) == set(ids[0])
        assert a.script.log.count(GENERATE) and b.script.log.count(GENERATE)


async def test_upstream_failures_are_retried_and_reported_like_the_chat_path() -> None:
    script = StandinScript()
    async with gym(script, max_retries=1) as (_vllm, _server, url, http):
        body = {"messages": await second_turn_history(http, url)}
        script.inject(HttpFault(503))
        status, answer = await post(http, url + "/v1/chat/completions", body)
        assert status == 200, answer
        script.inject(HttpFault(503), HttpFault(503))
        status, answer = await post(http, url + "/v1/chat/completions", body)
        assert status == 502 and GENERATE in answer["error"]["message"]
        script.inject(DropConnection())
        status, answer = await post(http, url + "/v1/chat/completions", body)
        assert status == 200, answer
        # A 4xx on generate refuses a request the model server built: not the caller's mistake.
        script.inject(HttpFault(400, "bad sampling"))
        status, answer = await post(http, url + "/v1/chat/completions", body)
        assert status == 502 and "bad sampling" in answer["error"]["message"]
        assert "refused the request the model server built" in answer["error"]["message"]


async def test_token_endpoints_gone_after_start_up_say_so_rather_than_blame_the_api_key() -> None:
    script = StandinScript()
    async with gym(script) as (_vllm, _server, url, http):
        body = {"messages": await second_turn_history(http, url)}
        script.scale_out = False  # e.g. vLLM restarted without --enable-scale-out
        status, answer = await post(http, url + "/v1/chat/completions", body)
    assert status == 502
    assert "--enable-scale-out" in answer["error"]["message"] and RENDER in answer["error"]["message"]
    assert "api_key" not in answer["error"]["message"]


async def test_a_turn_that_cannot_be_spliced_is_the_model_servers_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot_cut(*_args: Any) -> list[int]:
        raise SpliceError("assistant turn 1 (messages[1]): the chat template drops or rewrites it")

    async with gym() as (_vllm, _server, url, http):
        body = {"messages": await second_turn_history(http, url)}
        monkeypatch.setattr(splice_module, "splice_prompt", cannot_cut)
        monkeypatch.setattr(splice_module, "splice_at_prefix", cannot_cut)
        status, answer = await post(http, url + "/v1/chat/completions", body)
    # A 5xx: ng_collect_rollouts files it as the model's failure (never invalid_task) and counts it toward
    # max_consecutive_failures.
    assert status == 502, answer
    assert "assistant turn 1 (messages[1])" in answer["error"]["message"]
    assert "drops or rewrites" in answer["error"]["message"]
