import copy
import itertools
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st
from openai.types.responses import Response

from ngym.protocol.answers import chat_response_to_caller, chat_response_to_response
from ngym.protocol.options import ConversionOptions
from ngym.protocol.reasoning import THINK_CLOSE, THINK_OPEN, split_think, with_think
from ngym.protocol.requests import chat_request_to_upstream, responses_to_chat_request
from ngym.protocol.tokens import TOKEN_FIELDS

JSON = dict[str, Any]
MODEL = "policy-model"
USER = {"role": "user", "content": "question"}

# Plain unicode plus the fragments that matter here: tags, tag pieces and every kind of whitespace.
FRAGMENTS = st.sampled_from(
    [THINK_OPEN, THINK_CLOSE, "<", "think>", "</", " ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u200b", "🙂", "é"]
)
TEXT = st.lists(st.one_of(st.text(max_size=8), FRAGMENTS), max_size=6).map("".join)
NON_EMPTY = TEXT.filter(bool)
OPTIONS = st.builds(ConversionOptions, st.booleans(), st.booleans(), st.booleans())


@st.composite
def tool_calls(draw: st.DrawFn) -> list[JSON]:
    count = draw(st.integers(0, 3))
    return [
        {
            "id": draw(NON_EMPTY),
            "type": "function",
            "function": {"name": draw(NON_EMPTY), "arguments": draw(TEXT)},
        }
        for _ in range(count)
    ]


@st.composite
def vllm_answers(draw: st.DrawFn, with_reasoning: bool) -> JSON:
    message: JSON = {"role": "assistant", "content": draw(st.none() | TEXT), "tool_calls": draw(tool_calls())}
    if with_reasoning and draw(st.booleans()):
        message[draw(st.sampled_from(["reasoning", "reasoning_content"]))] = draw(NON_EMPTY)
    size = draw(st.integers(0, 5))
    token_ids = draw(st.lists(st.integers(0, 200_000), min_size=size, max_size=size))
    log_probs = draw(
        st.lists(st.floats(max_value=0, allow_nan=False, allow_infinity=False), min_size=size, max_size=size)
    )
    choice: JSON = {
        "index": 0,
        "message": message,
        "finish_reason": draw(st.sampled_from(["stop", "tool_calls", "length"])),
        "token_ids": token_ids,
        "logprobs": {
            "content": [
                {"token": f"token_id:{t}", "logprob": lp, "bytes": None, "top_logprobs": []}
                for t, lp in zip(token_ids, log_probs, strict=True)
            ]
        },
    }
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [choice],
        "prompt_token_ids": draw(st.lists(st.integers(0, 200_000), max_size=5)),
        "usage": {"prompt_tokens": 1, "completion_tokens": size, "total_tokens": size + 1},
    }


def message_of(answer: JSON) -> JSON:
    message: JSON = answer["choices"][0]["message"]
    return message


def reasoning_of(answer: JSON) -> str:
    message = message_of(answer)
    return str(message.get("reasoning") or message.get("reasoning_content") or "")


def expected_tokens(answer: JSON) -> JSON:
    choice = answer["choices"][0]
    return {
        "prompt_token_ids": answer["prompt_token_ids"],
        "generation_token_ids": choice["token_ids"],
        "generation_log_probs": [entry["logprob"] for entry in choice["logprobs"]["content"]],
    }


def assert_assistant_matches(
    assistant: JSON, answer: JSON, opts: ConversionOptions, content: str | None, reasoning: str
) -> None:
    assert assistant["content"] == content
    if reasoning:
        assert assistant["reasoning"] == reasoning
        assert assistant["reasoning_content"] == reasoning
    else:
        assert not assistant.get("reasoning") and not assistant.get("reasoning_content")
    assert (assistant.get("tool_calls") or []) == message_of(answer)["tool_calls"]
    tokens = {field: assistant[field] for field in TOKEN_FIELDS if field in assistant}
    assert tokens == (expected_tokens(answer) if opts.return_token_id_information else {})


@given(vllm_answers(with_reasoning=True), OPTIONS, st.booleans())
def test_chat_to_responses_to_chat_round_trip(answer: JSON, opts: ConversionOptions, follow_up: bool) -> None:
    content = message_of(answer)["content"] or ""
    reasoning = reasoning_of(answer)
    if opts.uses_reasoning_parser:
        # <think> blocks vLLM left in content join its separate reasoning; everything else is unchanged.
        content, thought = split_think(content)
        reasoning += thought
    else:
        content, reasoning = with_think(reasoning, content), ""
    request: JSON = {"input": "question"}
    response = chat_response_to_response(answer, request, opts)
    Response.model_validate(response)
    history: JSON = {"input": [USER, *response["output"]] + ([USER] if follow_up else [])}
    before = copy.deepcopy(history)
    chat = responses_to_chat_request(history, MODEL, opts)
    assert history == before
    assert len(chat["messages"]) == (3 if follow_up else 2)
    assert_assistant_matches(chat["messages"][1], answer, opts, content, reasoning)


@given(vllm_answers(with_reasoning=True), OPTIONS)
def test_chat_to_caller_to_chat_round_trip(answer: JSON, opts: ConversionOptions) -> None:
    content = message_of(answer)["content"]
    reasoning = reasoning_of(answer)
    if opts.uses_reasoning_parser:
        assume(THINK_OPEN not in (content or "") and THINK_CLOSE not in reasoning)
    before = copy.deepcopy(answer)
    message = message_of(chat_response_to_caller(answer, opts))
    assert answer == before
    upstream = chat_request_to_upstream({"messages": [USER, message]}, MODEL, opts)
    if not opts.uses_reasoning_parser:
        assert upstream["messages"][1] is message
        reasoning = ""
        message = {key: value for key, value in message.items() if key not in ("reasoning", "reasoning_content")}
        assert_assistant_matches(message, answer, opts, content, reasoning)
        return
    # Thinking at the head of content turns a null content into "" once the thinking is cut out again.
    expected = (content or "") if reasoning else content
    assert_assistant_matches(upstream["messages"][1], answer, opts, expected, reasoning)


@given(TEXT, TEXT)
def test_think_block_round_trip(reasoning: str, text: str) -> None:
    assume(THINK_CLOSE not in reasoning and THINK_OPEN not in text)
    assert split_think(with_think(reasoning, text)) == (text, reasoning)


@given(TEXT)
def test_split_think_only_removes_tags(text: str) -> None:
    kept, thought = split_think(text)
    assert len(kept) + len(thought) <= len(text)
    assert THINK_OPEN not in kept
    if THINK_OPEN not in text:
        assert (kept, thought) == (text, "")


ITEM_KINDS = ["user", "system", "reasoning", "assistant", "function_call", "function_call_output"]
ASSISTANT_KINDS = {"reasoning", "assistant", "function_call"}


def make_item(kind: str, index: int) -> JSON:
    if kind in ("user", "system"):
        return {"role": kind, "content": f"m{index}"}
    if kind == "assistant":
        return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": f"a{index}"}]}
    if kind == "reasoning":
        return {"type": "reasoning", "summary": [{"type": "summary_text", "text": f"r{index}"}]}
    if kind == "function_call":
        return {"type": "function_call", "call_id": f"c{index}", "name": "f", "arguments": "{}"}
    return {"type": "function_call_output", "call_id": f"c{index}", "output": f"o{index}"}


def expected_messages(kinds: list[str], parser: bool) -> list[JSON]:
    messages: list[JSON] = []
    runs = itertools.groupby(enumerate(kinds), key=lambda pair: pair[1] in ASSISTANT_KINDS)
    for is_assistant, run_iter in runs:
        run = list(run_iter)
        if not is_assistant:
            for index, kind in run:
                if kind == "function_call_output":
                    messages.append({"role": "tool", "tool_call_id": f"c{index}", "content": f"o{index}"})
                else:
                    messages.append({"role": kind, "content": f"m{index}"})
            continue
        text = "".join(f"a{index}" for index, kind in run if kind == "assistant")
        thought = "".join(f"r{index}" for index, kind in run if kind == "reasoning")
        message: JSON = {"role": "assistant", "content": text if parser else with_think(thought, text)}
        if parser and thought:
            message["reasoning_content"] = message["reasoning"] = thought
        calls = [
            {"id": f"c{index}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            for index, kind in run
            if kind == "function_call"
        ]
        if calls:
            message["tool_calls"] = calls
        messages.append(message)
    return messages


@given(st.lists(st.sampled_from(ITEM_KINDS), max_size=12), st.booleans())
def test_each_run_of_assistant_items_is_one_message(kinds: list[str], parser: bool) -> None:
    items = [make_item(kind, index) for index, kind in enumerate(kinds)]
    opts = ConversionOptions(uses_reasoning_parser=parser)
    messages = responses_to_chat_request({"input": items}, MODEL, opts)["messages"]
    assert messages == expected_messages(kinds, parser)
