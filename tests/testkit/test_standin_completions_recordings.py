"""The stand-in's /v1/completions, /v1/responses and (de)tokenize answers have the wire shapes real vLLM 0.32
produced (tests/data/vllm_recordings, recorded by testkit.recordings.completions_cases)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ngym.vllm.process import HttpResult, http_request
from testkit.recordings.record import load_recording, shape_mismatches
from testkit.standin.completions import detokenize
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer
from testkit.standin.wire import fake_tokenize

RECORDINGS = Path(__file__).resolve().parents[1] / "data" / "vllm_recordings"


@pytest.fixture(scope="module")
def shared_standin() -> Iterator[StandinServer]:
    with StandinServer() as server:
        yield server


@pytest.fixture
def standin(shared_standin: StandinServer) -> StandinServer:
    shared_standin.script = StandinScript()
    return shared_standin


def replay(server: StandinServer, name: str) -> tuple[dict[str, Any], HttpResult]:
    rec = load_recording(name, RECORDINGS)
    req = rec["request"]
    result = http_request(
        server.root_url + req["path"], method=req["method"], body=req["body"], headers=req["headers"], timeout=10
    )
    return rec, result


def comparable(body: Any) -> Any:
    """A completions answer with the parts keyed by token (top_logprobs, prompt_logprobs) as lists of values and
    the echoed prompt's leading nulls dropped, so that shapes compare across different tokens."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        return body
    choices = []
    for choice in body["choices"]:
        choice = dict(choice)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            logprobs = dict(logprobs)
            for key in ("token_logprobs", "top_logprobs"):
                logprobs[key] = [list(v.values()) if isinstance(v, dict) else v for v in logprobs[key] if v is not None]
            choice["logprobs"] = logprobs
        if isinstance(choice.get("prompt_logprobs"), list):
            choice["prompt_logprobs"] = [list(v.values()) for v in choice["prompt_logprobs"] if v is not None]
        choices.append(choice)
    return {**body, "choices": choices}


def completion(text: str) -> Callable[[StandinScript], None]:
    def configure(script: StandinScript) -> None:
        script.completion_text = text

    return configure


def tool_mode(script: StandinScript) -> None:
    script.tool_call_mode = True


def small_context(script: StandinScript) -> None:
    script.max_model_len = 1024


def untrusted(script: StandinScript) -> None:
    script.trust_request_chat_template = False


def no_change(script: StandinScript) -> None:
    return None


SHAPE_CASES: list[tuple[str, Callable[[StandinScript], None]]] = [
    ("completions_text", completion(" 4")),
    ("completions_token_ids", completion(" 4")),
    ("completions_token_ids_prompt", completion("Hi")),
    ("completions_logprobs_token_strings", completion(" 4")),
    ("completions_stop_string", completion(" 4! Done")),
    ("completions_max_tokens", completion(" four plus nothing")),
    ("completions_echo_logprobs", no_change),
    ("tokenize_prompt_without_special_tokens", no_change),
    ("tokenize_messages_with_request_template", no_change),
    ("detokenize", no_change),
    ("responses_text_reply", no_change),
    ("responses_tool_call", tool_mode),
]
EXACT_CASES: list[tuple[str, Callable[[StandinScript], None]]] = [
    ("completions_context_length_error", small_context),
    ("completions_max_tokens_over_max_model_len", small_context),
    ("completions_unknown_model", no_change),
    ("responses_context_length_error", small_context),
    ("responses_unknown_model", no_change),
    ("tokenize_request_template_untrusted", untrusted),
]


@pytest.mark.parametrize(("name", "configure"), SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_standin_answers_in_the_recorded_shape(
    standin: StandinServer, name: str, configure: Callable[[StandinScript], None]
) -> None:
    configure(standin.script)
    rec, result = replay(standin, name)
    assert result.status == rec["response"]["status"], result.body
    assert shape_mismatches(comparable(rec["response"]["body"]), comparable(result.json())) == []


@pytest.mark.parametrize(("name", "configure"), EXACT_CASES, ids=[c[0] for c in EXACT_CASES])
def test_standin_error_bodies_equal_the_recording(
    standin: StandinServer, name: str, configure: Callable[[StandinScript], None]
) -> None:
    configure(standin.script)
    rec, result = replay(standin, name)
    assert result.status == rec["response"]["status"]
    assert result.json() == rec["response"]["body"]


def test_the_recordings_cover_the_cases_the_standin_emulates() -> None:
    names = {p.stem for p in RECORDINGS.glob("*.json")}
    assert {n for n, _ in SHAPE_CASES + EXACT_CASES} <= names


def test_recorded_completions_carry_token_data_as_the_model_server_reads_it() -> None:
    """What completions mode relies on: IDs and token_id:N tokens agree; echo gives one log-prob per prompt token
    (the first null) plus the generated one; a stop string's token is generated but its text not shown."""
    for name in ("completions_token_ids", "completions_token_ids_prompt", "completions_stop_string"):
        choice = load_recording(name, RECORDINGS)["response"]["body"]["choices"][0]
        assert [f"token_id:{i}" for i in choice["token_ids"]] == choice["logprobs"]["tokens"]
        assert len(choice["logprobs"]["token_logprobs"]) == len(choice["token_ids"])
        assert isinstance(choice["prompt_token_ids"], list)
    stop = load_recording("completions_stop_string", RECORDINGS)["response"]["body"]["choices"][0]
    assert (stop["text"], stop["stop_reason"], stop["finish_reason"]) == (" 4", "!", "stop")
    echo = load_recording("completions_echo_logprobs", RECORDINGS)
    values = echo["response"]["body"]["choices"][0]["logprobs"]["token_logprobs"]
    assert len(values) == len(echo["request"]["body"]["prompt"]) + 1 and values[0] is None


def test_standin_completions_follow_the_script(standin: StandinServer) -> None:
    standin.script.completion_text = " 4! Done"
    url = standin.root_url + "/v1/completions"
    body = {"model": standin.script.model, "prompt": "Q:", "logprobs": 0, "return_token_ids": True}
    plain = http_request(url, method="POST", body={**body, "return_tokens_as_token_ids": True}).json()["choices"][0]
    assert plain["text"] == " 4! Done" and plain["token_ids"][-1] == fake_tokenize("<|im_end|>")[0]
    assert plain["prompt_token_ids"] == fake_tokenize("Q:")
    stopped = http_request(url, method="POST", body={**body, "stop": ["!"]}).json()["choices"][0]
    assert (stopped["text"], stopped["stop_reason"]) == (" 4", "!")
    assert stopped["token_ids"] == fake_tokenize(" 4!")
    cut = http_request(url, method="POST", body={**body, "max_tokens": 2}).json()["choices"][0]
    assert (cut["text"], cut["finish_reason"]) == (" 4", "length")
    echo = http_request(url, method="POST", body={**body, "prompt": [65, 66], "echo": True, "max_tokens": 1}).json()
    values = echo["choices"][0]["logprobs"]["token_logprobs"]
    assert values[0] is None and len(values) == 3 and echo["choices"][0]["text"] == "AB "


def test_detokenize_keeps_special_tokens() -> None:
    ids = fake_tokenize("<|im_start|>user\nHé<|im_end|>\n")
    assert detokenize(ids) == "<|im_start|>user\nHé<|im_end|>\n"
