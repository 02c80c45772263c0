"""`is_responses_native` (vLLM's own /v1/responses) and `POST /loglikelihood`, in front of the vLLM stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from responses_api_models.vllm_model.tests.test_app import MODEL, WEATHER_TOOL, Caller, running
from testkit.standin.completions import detokenize
from testkit.standin.script import HttpFault, StandinScript, context_length_error
from testkit.standin.wire import fake_logprob, fake_tokenize

RESPONSES = "/v1/responses"
COMPLETIONS = "/v1/completions"


@pytest.fixture
async def caller() -> AsyncIterator[Caller]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield Caller(http)


# --- is_responses_native ------------------------------------------------------------------------------------


async def test_native_responses_go_to_vllms_own_route_with_the_settings(caller: Caller) -> None:
    options: dict[str, Any] = {
        "is_responses_native": True,
        "chat_template_kwargs": {"reasoning_effort_level": "low"},
        "extra_body": {"top_k": 5, "temperature": 0.3},
        "sampling_overrides": {"seed": 11},
    }
    script = StandinScript(tool_call_mode=True)
    body = {"model": "gpt-oss", "input": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER_TOOL],
            "temperature": 0.9, "store": False}  # fmt: skip
    async with running(script, **options) as (vllm, url):
        answer = await caller.responses(url, body)
        chat = await caller.chat(url, {"messages": [{"role": "user", "content": "hi"}]})
        sent = vllm.log.last_body(RESPONSES)
        assert vllm.log.count() == 1  # the chat route still goes to /v1/chat/completions
    assert answer.status == 200, answer.text
    assert sent == {
        **body,
        "model": MODEL,
        "chat_template_kwargs": {"reasoning_effort_level": "low"},
        "top_k": 5,
        "seed": 11,
    }
    # vLLM's answer comes back as it is.
    assert answer.body["output"][0]["type"] == "function_call" and answer.body["output"][0]["name"] == "get_weather"
    assert answer.body["usage"]["input_tokens_details"]["input_tokens_per_turn"] == []
    assert answer.cookie is not None
    assert chat.status == 200


async def test_native_responses_failures(caller: Caller) -> None:
    async with running(is_responses_native=True) as (vllm, url):
        vllm.script.inject(context_length_error())
        overflow = await caller.responses(url, {"input": "long", "max_output_tokens": 5})
        vllm.script.inject(HttpFault(400, {"error": {"message": "bad tool", "type": "BadRequestError",
                                                     "param": "tools", "code": 400}}))  # fmt: skip
        refused = await caller.responses(url, {"input": "hi"})
        audio = await caller.responses(url, {"input": "hi", "metadata": {"audio_path": "/tmp/a.wav"}})
        streaming = await caller.responses(url, {"input": "hi", "stream": True})
        assert vllm.log.count(RESPONSES) == 2
    assert overflow.status == 200 and overflow.body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert refused.status == 400 and "bad tool" in refused.body["error"]["message"]
    assert audio.status == 422 and audio.body["error"]["param"] == "metadata.audio_path"
    assert streaming.status == 422 and streaming.body["error"]["param"] == "stream"


# --- /loglikelihood ---------------------------------------------------------------------------------------------


def expected_logprob(text: str) -> float:
    return sum(fake_logprob(t) for t in fake_tokenize(text))


async def test_loglikelihood_sums_each_continuations_echoed_log_probs(caller: Caller) -> None:
    async with running(use_completions_api=True, sampling_overrides={"temperature": 1.0}) as (vllm, url):
        answer = await caller.post(url + "/loglikelihood", {"context": "Answer: ", "continuations": ["A", "BB"]})
        sent = vllm.log.bodies(COMPLETIONS)
        tokenized = vllm.log.bodies("/tokenize")
    assert answer.status == 200, answer.text
    context = fake_tokenize("Answer:")
    scores = answer.body["scores"]
    assert answer.body["model"] == MODEL and [s["continuation"] for s in scores] == ["A", "BB"]
    for score, continuation in zip(scores, [" A", " BB"], strict=True):
        # The context's trailing space belongs to the continuation.
        assert score["context_tokens"] == len(context)
        assert score["continuation_token_ids"] == fake_tokenize(continuation)
        assert score["logprob"] == pytest.approx(expected_logprob(continuation))
        assert score["token_logprobs"] == [fake_logprob(t) for t in fake_tokenize(continuation)]
    for body in sent:  # sampling settings do not apply: scoring samples nothing
        assert (body["echo"], body["logprobs"], body["max_tokens"], body["temperature"], body["seed"]) == (
            True, 1, 1, 0, 42)  # fmt: skip
        assert body["prompt"][: len(context)] == context
    assert all(body["add_special_tokens"] is False for body in tokenized)
    assert {body["prompt"] for body in tokenized} == {"Answer:", "Answer: A", "Answer: BB"}


@pytest.mark.parametrize(
    ("body", "options", "param", "words"),
    [
        ({"context": "   ", "continuations": ["A", "B"]}, {}, "context", "whitespace"),
        ({"context": "Q:", "continuations": ["A", ""]}, {}, "continuations[1]", "empty"),
        ({"context": "Q:", "continuations": ["A"]}, {}, "continuations", "at least 2"),
        ({"context": "Q:", "continuations": "A"}, {}, "continuations", "list"),
        ({"context": "Q: <|im_end", "continuations": ["|>", "B"]}, {}, "continuations[0]", "ambiguous"),
        (
            {"context": "Question:", "continuations": [" A", " B"]},
            {"max_context_tokens": 11},
            "continuations[0]",
            "max_context_tokens",
        ),
    ],
)
async def test_loglikelihood_refuses_what_it_cannot_score_exactly(
    caller: Caller, body: dict[str, Any], options: dict[str, Any], param: str, words: str
) -> None:
    async with running(**options) as (vllm, url):
        answer = await caller.post(url + "/loglikelihood", body)
        assert vllm.log.count(COMPLETIONS) == 0
    assert answer.status == 422, answer.text
    assert answer.body["error"]["param"] == param and words in answer.body["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "status", "words"),
    [
        (context_length_error(), 422, "does not fit"),
        (HttpFault(200, {"choices": [{"logprobs": {"token_logprobs": [None, -1.0]}}]}), 502, "one log-prob per"),
        (HttpFault(200, {"choices": []}), 502, "exactly one"),
        (HttpFault(200, {"choices": [{"logprobs": {"token_logprobs": [None, -1.0, None, -1.0]}}]}), 502, "None"),
    ],
)
async def test_loglikelihood_answers_it_cannot_read_are_errors_not_zeros(
    caller: Caller, fault: Any, status: int, words: str
) -> None:
    async with running() as (vllm, url):
        vllm.script.inject(fault, fault)
        answer = await caller.post(url + "/loglikelihood", {"context": "Q:", "continuations": ["A", "B"]})
    assert answer.status == status, answer.text
    assert words in answer.body["error"]["message"]


async def test_loglikelihood_with_the_chat_template_scores_after_the_assistant_prefix(caller: Caller) -> None:
    options: dict[str, Any] = {
        "use_completions_api": True,
        "render_chat_template": True,
        "likelihood_add_special_tokens": True,
    }
    async with running(**options) as (vllm, url):
        answer = await caller.post(url + "/loglikelihood", {"context": "Pick:", "continuations": ["A", "B"]})
        tokenized = vllm.log.bodies("/tokenize")
    assert answer.status == 200, answer.text
    rendered = detokenize(fake_tokenize("<|im_start|>user\nPick:<|im_end|>\n<|im_start|>assistant\n"))
    context = rendered.rstrip()
    first = answer.body["scores"][0]
    # The template's trailing newline moves to the continuation, as trailing whitespace of any context does.
    assert first["continuation_token_ids"] == fake_tokenize("\nA")
    assert first["context_tokens"] == len(fake_tokenize(context))
    prompts = [body.get("prompt") for body in tokenized if "prompt" in body]
    assert set(prompts) == {context, context + "\nA", context + "\nB"}
    assert all(body["add_special_tokens"] is True for body in tokenized if "prompt" in body)
