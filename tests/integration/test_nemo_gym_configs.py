"""NeMo Gym's own vllm_model configs (tests/data/nemo_gym_configs, unchanged) run with ng_run against real vLLM,
and every key of NeMo Gym's vllm_model has its effect on what real vLLM sees and answers.

The tiny model babbles: structured outputs (passed through, or set by `extra_body`) make it emit a given text;
prompts are compared with vLLM's own `/tokenize` of the messages the key should produce."""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ngym.http.app import serve_in_background
from ngym.vllm.process import VllmServer
from responses_api_models.vllm_model.app import VllmModel
from testkit.forcing import literal_regex
from testkit.gym_process import GymProcess

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
NEMO_GYM_CONFIGS = "tests/data/nemo_gym_configs"
WEATHER_CONFIG = "resources_servers/simple_weather/configs/simple_weather.yaml"
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
TOOL_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call>'
# Shows where a turn's thinking is: in the reasoning field ([...]) or in the content (<think>...</think>).
SHOWS_REASONING = (
    "{% for m in messages %}{{ m.role }}:{% if m.reasoning %}[{{ m.reasoning }}]{% endif %}{{ m.content }}\n"
    "{% endfor %}assistant:"
)
REASONING_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in SF?"},
    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Look it up."}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
    {"role": "user", "content": "And LA?"},
]


def config(vllm: VllmServer, **settings: Any) -> dict[str, Any]:
    section = {"entrypoint": "app.py", "base_url": vllm.base_url, "model": vllm.model_name, **settings}
    return {"policy_model": {"responses_api_models": {"vllm_model": section}}}


@asynccontextmanager
async def model_server(vllm: VllmServer, **settings: Any) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    server = VllmModel.from_config(config(vllm, **settings), "policy_model")
    async with serve_in_background(server.app()) as url, aiohttp.ClientSession() as http:
        yield url, http


def forced(text: str, **more: Any) -> dict[str, Any]:
    return {"structured_outputs": {"regex": literal_regex(text)}, "seed": 7, **more}


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    async with http.post(url, json=body) as resp:
        answer = await resp.json()
        assert resp.status == status, answer
        return dict(answer)


def post_sync(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


def tokenize(vllm: VllmServer, **body: Any) -> list[int]:
    answer = vllm.request("POST", "/tokenize", {"model": vllm.model_name, **body})
    assert answer.status == 200, answer.body
    return list(answer.json()["tokens"])


def chat_prompt(vllm: VllmServer, messages: list[dict[str, Any]], **more: Any) -> list[int]:
    return tokenize(vllm, messages=messages, add_generation_prompt=True, **more)


# --- NeMo Gym's three files, unchanged, through ng_run -------------------------------------------------------


@pytest.mark.parametrize("name", ["vllm_model", "vllm_model_for_training", "vllm_model_completions"])
def test_ng_run_starts_nemo_gyms_own_config_and_serves_with_it(
    vllm_server: VllmServer, tmp_path: Path, name: str
) -> None:
    overrides = [
        f"++policy_base_url={vllm_server.base_url}",
        "++policy_api_key=EMPTY",
        f"++policy_model_name={vllm_server.model_name}",
    ]
    paths = [f"{NEMO_GYM_CONFIGS}/{name}.yaml", WEATHER_CONFIG]
    with GymProcess(ROOT, paths, overrides, log_path=tmp_path / "ng_run.log") as gym:
        url = gym.url_of("policy_model")
        body = {"input": "What is 2+2?", "max_output_tokens": 40, **forced("</think>4.")}
        if name == "vllm_model_completions":  # a base model's completion: no chat template, no reasoning parser
            body = {"input": "What is 2+2?", "max_output_tokens": 40, **forced(" 4.")}
        answer = post_sync(url + "/v1/responses", body)
    message = answer["output"][-1]
    assert answer["status"] == "completed" and message["type"] == "message"
    if name == "vllm_model_for_training":
        assert message["prompt_token_ids"] == chat_prompt(vllm_server, [{"role": "user", "content": "What is 2+2?"}])
        assert len(message["generation_token_ids"]) == len(message["generation_log_probs"]) > 0
    elif name == "vllm_model_completions":
        assert message["content"][0]["text"] == " 4." and "prompt_token_ids" not in message
    else:
        assert message["content"][0]["text"] == "4." and "prompt_token_ids" not in message
    log = (tmp_path / "ng_run.log").read_text()
    assert "unknown key" not in log


# --- reasoning keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "assistant"),
    [
        ({}, {"role": "assistant", "content": "Sunny.", "reasoning": "Look it up."}),
        ({"uses_interleaved_reasoning": False}, {"role": "assistant", "content": "Sunny."}),
        (
            {"preserve_reasoning_in_assistant_content": True},
            {"role": "assistant", "content": "<think>Look it up.</think>Sunny."},
        ),
        ({"uses_reasoning_parser": False}, {"role": "assistant", "content": "<think>Look it up.</think>Sunny."}),
    ],
    ids=["interleaved", "not-interleaved", "preserved", "no-parser"],
)
async def test_earlier_reasoning_reaches_the_prompt_as_configured(
    vllm_server: VllmServer, settings: dict[str, Any], assistant: dict[str, Any]
) -> None:
    training = {"return_token_id_information": True, "token_exact": "never", **settings}
    request = {"input": REASONING_HISTORY, "chat_template": SHOWS_REASONING, **forced("</think>Rainy.")}
    async with model_server(vllm_server, **training) as (url, http):
        answer = await post(http, url + "/v1/responses", request)
    expected = [REASONING_HISTORY[0], assistant, REASONING_HISTORY[3]]
    assert answer["output"][-1]["prompt_token_ids"] == chat_prompt(vllm_server, expected, chat_template=SHOWS_REASONING)


async def test_reasoning_parser_setting_decides_how_vllms_thinking_comes_back(vllm_server: VllmServer) -> None:
    text = "<think>Add them.</think>4."
    async with model_server(vllm_server) as (url, http):
        parsed = await post(http, url + "/v1/responses", {"input": "2+2?", **forced(text)})
    assert [item["type"] for item in parsed["output"]] == ["reasoning", "message"]
    assert parsed["output"][0]["summary"][0]["text"] == "Add them."


async def test_sequential_reasoning_off_does_not_ask_for_more_thinking(vllm_server: VllmServer) -> None:
    thinking_only = REASONING_HISTORY[:2]
    async with model_server(vllm_server, sequential_reasoning_allowed=False) as (url, http):
        stopped = await post(http, url + "/v1/responses", {"input": thinking_only, **forced("</think>More.")})
        answered = await post(http, url + "/v1/responses", {"input": REASONING_HISTORY, **forced("</think>More.")})
    assert stopped["incomplete_details"] == {"reason": "content_filter"} and stopped["usage"]["input_tokens"] == 0
    assert answered["status"] == "completed" and answered["usage"]["input_tokens"] > 0


async def test_developer_role_becomes_system_in_the_prompt(vllm_server: VllmServer) -> None:
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    async with model_server(
        vllm_server, replace_developer_role_with_system=True, return_token_id_information=True, token_exact="never"
    ) as (url, http):
        answer = await post(http, url + "/v1/responses", {"input": messages, **forced("</think>Hi.")})
    system = [{"role": "system", "content": "Be brief."}, messages[1]]
    assert answer["output"][-1]["prompt_token_ids"] == chat_prompt(vllm_server, system)


# --- token keys ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [True, False])
async def test_token_ids_inline_or_from_tokenize_are_the_same_prompt(vllm_server: VllmServer, inline: bool) -> None:
    settings = {
        "return_token_id_information": True,
        "request_prompt_and_generation_token_ids": inline,
        "token_exact": "never",
    }
    async with model_server(vllm_server, **settings) as (url, http):
        answer = await post(http, url + "/v1/responses", {"input": "hi", **forced("</think>Hello.")})
    message = answer["output"][-1]
    assert message["prompt_token_ids"] == chat_prompt(vllm_server, [{"role": "user", "content": "hi"}])
    assert len(message["generation_token_ids"]) == len(message["generation_log_probs"]) > 0


# --- request settings ----------------------------------------------------------------------------------------


async def test_template_kwargs_extra_body_and_sampling_overrides_reach_vllm(vllm_server: VllmServer) -> None:
    template = "{{ style }}|{% for m in messages %}{{ m.content }}{% endfor %}"
    settings = {
        "chat_template_kwargs": {"style": "config"},
        "extra_body": {"structured_outputs": {"regex": literal_regex("</think>From the config.")}},
        "sampling_overrides": {"max_tokens": 3},
        "return_token_id_information": True,
        "token_exact": "never",
    }
    async with model_server(vllm_server, **settings) as (url, http):
        overridden = await post(
            http,
            url + "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "chat_template": template},
        )
        row = {
            "chat_template_kwargs": json.dumps({"style": "row"}),
            "extra_body": json.dumps({"structured_outputs": {"regex": literal_regex("</think>Row.")}}),
        }
        per_row = await post(
            http,
            url + "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "chat_template": template, "metadata": row},
        )
    first = overridden["choices"][0]
    assert first["message"]["prompt_token_ids"] == tokenize(vllm_server, prompt="config|hi", add_special_tokens=False)
    assert first["finish_reason"] == "length" and len(first["message"]["generation_token_ids"]) == 3
    second = per_row["choices"][0]["message"]
    assert second["prompt_token_ids"] == tokenize(vllm_server, prompt="row|hi", add_special_tokens=False)


async def test_extra_body_forces_the_text_and_the_caller_still_wins(vllm_server: VllmServer) -> None:
    settings = {"extra_body": {"structured_outputs": {"regex": literal_regex("</think>Configured.")}, "seed": 3}}
    async with model_server(vllm_server, **settings) as (url, http):
        configured = await post(http, url + "/v1/responses", {"input": "hi", "max_output_tokens": 30})
        caller = await post(
            http, url + "/v1/responses", {"input": "hi", "max_output_tokens": 30, **forced("</think>Mine.")}
        )
    assert configured["output"][-1]["content"][0]["text"] == "Configured."
    assert caller["output"][-1]["content"][0]["text"] == "Mine."


async def test_the_audio_side_channel_reaches_vllm(vllm_server: VllmServer, tmp_path: Path) -> None:
    (tmp_path / "clip.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    async with model_server(vllm_server, audio_root=str(tmp_path)) as (url, http):
        refused = await post(
            http, url + "/v1/responses", {"input": "Transcribe.", "metadata": {"audio_path": "clip.wav"}}, status=400
        )
        plain = await post(http, url + "/v1/responses", {"input": "Transcribe.", **forced("</think>Ok.")})
    # vLLM received the clip as an audio part of the user message: the text-only tiny model refuses it.
    assert "not a multimodal model" in refused["error"]["message"]
    assert plain["status"] == "completed"


# --- is_responses_native -------------------------------------------------------------------------------------


async def test_native_responses_are_vllms_own(vllm_server: VllmServer) -> None:
    async with model_server(vllm_server, is_responses_native=True, sampling_overrides={"seed": 5}) as (url, http):
        text = await post(
            http, url + "/v1/responses", {"input": "hi", "max_output_tokens": 40, **forced("</think>Hello.")}
        )
        call = await post(
            http,
            url + "/v1/responses",
            {
                "input": [{"role": "user", "content": "Weather in SF?"}],
                "tools": TOOLS,
                "max_output_tokens": 200,
                **forced("</think>" + TOOL_CALL),
            },
        )
    assert text["output"][-1]["content"][0]["text"] == "Hello." and text["model"] == vllm_server.model_name
    # vLLM's own Responses objects: fields ngym's conversion never writes.
    assert "input_messages" in text and "phase" in text["output"][-1]
    function_call = call["output"][-1]
    assert function_call["type"] == "function_call" and json.loads(function_call["arguments"]) == {"city": "SF"}


# --- completions mode ----------------------------------------------------------------------------------------


async def test_raw_completions_prompt_and_token_data(vllm_server: VllmServer) -> None:
    async with model_server(vllm_server, use_completions_api=True, return_token_id_information=True) as (url, http):
        answer = await post(
            http,
            url + "/v1/responses",
            {"instructions": "Answer.", "input": "2+2?", "max_output_tokens": 20, **forced(" 4")},
        )
        chat = await post(
            http,
            url + "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 20, **forced(" 4")},
        )
        tools = await post(
            http,
            url + "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            status=422,
        )
    message = answer["output"][-1]
    assert message["content"][0]["text"] == " 4"
    assert message["prompt_token_ids"] == tokenize(vllm_server, prompt="Answer.\n\n2+2?")
    assert len(message["generation_token_ids"]) == len(message["generation_log_probs"]) > 0
    assert chat["choices"][0]["message"]["content"] == " 4"
    assert chat["choices"][0]["message"]["prompt_token_ids"] == tokenize(vllm_server, prompt="2+2?")
    assert tools["error"]["param"] == "tools"


async def test_rendered_completions_use_the_chat_template_and_tokenizer(
    vllm_server: VllmServer, tmp_path: Path
) -> None:
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "bye"},
    ]
    settings = {"use_completions_api": True, "render_chat_template": True, "return_token_id_information": True}
    async with model_server(vllm_server, **settings) as (url, http):
        served = await post(
            http, url + "/v1/chat/completions", {"messages": history, "max_tokens": 20, **forced("Bye.")}
        )
    assert served["choices"][0]["message"]["prompt_token_ids"] == chat_prompt(vllm_server, history)
    assert served["choices"][0]["message"]["content"] == "Bye."

    template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    async with model_server(vllm_server, **settings, tokenizer=str(tmp_path)) as (url, http):
        lent = await post(http, url + "/v1/chat/completions", {"messages": history, "max_tokens": 20, **forced("Bye.")})
    expected = tokenize(
        vllm_server, prompt="<user>hi\n<assistant>Hello.\n<user>bye\n<assistant>", add_special_tokens=False
    )
    assert lent["choices"][0]["message"]["prompt_token_ids"] == expected


# --- /loglikelihood ------------------------------------------------------------------------------------------


async def test_loglikelihood_equals_vllms_echoed_log_probs(vllm_server: VllmServer) -> None:
    async with model_server(vllm_server, use_completions_api=True) as (url, http):
        answer = await post(http, url + "/loglikelihood", {"context": "Answer:", "continuations": [" A", " BB"]})
    context_ids = tokenize(vllm_server, prompt="Answer:", add_special_tokens=False)
    for score in answer["scores"]:
        ids = tokenize(vllm_server, prompt="Answer:" + score["continuation"], add_special_tokens=False)
        direct = vllm_server.request(
            "POST",
            "/v1/completions",
            {
                "model": vllm_server.model_name,
                "prompt": ids,
                "echo": True,
                "logprobs": 1,
                "max_tokens": 1,
                "temperature": 0,
            },
        ).json()
        expected = direct["choices"][0]["logprobs"]["token_logprobs"][len(context_ids) : len(ids)]
        assert (
            score["context_tokens"] == len(context_ids) and score["continuation_token_ids"] == ids[len(context_ids) :]
        )
        assert score["token_logprobs"] == pytest.approx(expected)
        assert math.isclose(score["logprob"], sum(expected), rel_tol=1e-6)


async def test_loglikelihood_with_the_chat_template(vllm_server: VllmServer) -> None:
    settings = {"use_completions_api": True, "render_chat_template": True}
    async with model_server(vllm_server, **settings) as (url, http):
        answer = await post(http, url + "/loglikelihood", {"context": "Pick one:", "continuations": ["A", "B"]})
    rendered = "<|im_start|>user\nPick one:<|im_end|>\n<|im_start|>assistant"
    context_ids = tokenize(vllm_server, prompt=rendered, add_special_tokens=False)
    first = answer["scores"][0]
    assert first["context_tokens"] == len(context_ids)
    whole = tokenize(vllm_server, prompt=rendered + "\nA", add_special_tokens=False)
    assert first["continuation_token_ids"] == whole[len(context_ids) :]
