import copy
from typing import Any

import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from ngym.protocol.answers import (
    chat_response_to_caller,
    chat_response_to_response,
    context_length_chat_response,
    context_length_response,
    needs_prompt_token_ids,
)
from ngym.protocol.errors import ConversionError
from ngym.protocol.options import ConversionOptions
from ngym.protocol.reasoning import split_think
from ngym.protocol.requests import RESPONSES_DROPPED_FIELDS, chat_request_to_upstream, responses_to_chat_request
from ngym.protocol.tokens import TokenDataError, add_token_request_flags

JSON = dict[str, Any]

PARSER = ConversionOptions()
NO_PARSER = ConversionOptions(uses_reasoning_parser=False)
TOKENS = ConversionOptions(return_token_id_information=True)
MODEL = "policy-model"
TOKEN_REQUEST_FLAGS = {"logprobs", "top_logprobs", "return_token_ids", "return_tokens_as_token_ids"}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def to_chat(body: JSON, opts: ConversionOptions = PARSER) -> JSON:
    return responses_to_chat_request(body, MODEL, opts)


def vllm_answer(
    content: str | None = "Hello",
    *,
    reasoning: str | None = None,
    reasoning_field: str = "reasoning",
    tool_calls: list[JSON] | None = None,
    finish_reason: str = "stop",
    token_ids: list[int] | None = None,
    log_probs: list[float] | None = None,
    prompt_token_ids: list[int] | None = None,
    token_texts: bool = False,
) -> JSON:
    message: JSON = {"role": "assistant", "content": content, "tool_calls": tool_calls or []}
    if reasoning is not None:
        message[reasoning_field] = reasoning
    choice: JSON = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    if log_probs is not None:
        tokens = [f"tok{i}" if token_texts else f"token_id:{t}" for i, t in enumerate(token_ids or [])]
        choice["logprobs"] = {
            "content": [
                {"token": token, "logprob": lp, "bytes": None, "top_logprobs": []}
                for token, lp in zip(tokens, log_probs, strict=True)
            ]
        }
    if token_ids is not None:
        choice["token_ids"] = token_ids
    answer: JSON = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [choice],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    if prompt_token_ids is not None:
        answer["prompt_token_ids"] = prompt_token_ids
    return answer


def tool_call(call_id: str = "call_1", name: str = "get_weather", arguments: str = '{"city": "Paris"}') -> JSON:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def token_answer(**kwargs: Any) -> JSON:
    return vllm_answer(token_ids=[5, 6, 7], log_probs=[-0.5, -0.25, 0.0], prompt_token_ids=[1, 2, 3], **kwargs)


def token_set(seed: int) -> JSON:
    return {
        "prompt_token_ids": [seed, seed + 1],
        "generation_token_ids": [seed + 2, seed + 3],
        "generation_log_probs": [-0.1 * seed, -0.2],
    }


# --- Responses request -> Chat request: messages ------------------------------------------------------


def test_string_input_is_one_user_message_and_model_is_replaced() -> None:
    chat = to_chat({"model": "caller-model", "input": "  hi\n\t there  "})
    assert chat == {"model": MODEL, "messages": [{"role": "user", "content": "  hi\n\t there  "}]}


def test_role_only_items_and_message_items_keep_their_roles() -> None:
    body = {
        "input": [
            {"role": "system", "content": "sys"},
            {"role": "developer", "content": "dev"},
            {"type": "message", "role": "user", "content": "question"},
        ]
    }
    assert [m["role"] for m in to_chat(body)["messages"]] == ["system", "developer", "user"]
    replaced = to_chat(body, ConversionOptions(replace_developer_role_with_system=True))
    assert [m["role"] for m in replaced["messages"]] == ["system", "system", "user"]
    assert replaced["messages"][1]["content"] == "dev"


def test_instructions_become_a_leading_system_message() -> None:
    chat = to_chat({"instructions": "Be brief.", "input": "hi"})
    assert chat["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_content_parts_map_to_chat_parts() -> None:
    body = {
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": " a \n"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ],
            }
        ]
    }
    assert to_chat(body)["messages"][0]["content"] == [
        {"type": "text", "text": " a \n"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]


def test_consecutive_assistant_items_form_one_message() -> None:
    body = {
        "input": [
            {"role": "user", "content": "weather?"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think "}]},
            {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "more"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Let me check.", "annotations": []}],
            },
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"A"}'},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"B"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": "rainy"},
            {"role": "assistant", "content": "A is sunny, B is rainy."},
            {"role": "user", "content": "thanks"},
        ]
    }
    messages = to_chat(body)["messages"]
    assert messages == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "reasoning_content": "think more",
            "reasoning": "think more",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"A"}'}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"B"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rainy"},
        {"role": "assistant", "content": "A is sunny, B is rainy."},
        {"role": "user", "content": "thanks"},
    ]


def test_tool_calls_only_group_has_empty_string_content() -> None:
    body = {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]}
    assert to_chat(body)["messages"][0]["content"] == ""


def test_assistant_output_text_and_refusal_parts_become_text() -> None:
    content = [
        {"type": "output_text", "text": "a ", "annotations": []},
        {"type": "refusal", "refusal": "no"},
        {"type": "input_text", "text": "!"},
    ]
    messages = to_chat({"input": [{"role": "assistant", "content": content}]})["messages"]
    assert messages == [{"role": "assistant", "content": "a no!"}]


def test_function_call_output_strings_pass_and_parts_map() -> None:
    body = {
        "input": [
            {"type": "function_call_output", "call_id": "c", "output": ' {"t": 1}\n'},
            {"type": "function_call_output", "call_id": "d", "output": [{"type": "input_text", "text": "x"}]},
        ]
    }
    assert to_chat(body)["messages"] == [
        {"role": "tool", "tool_call_id": "c", "content": ' {"t": 1}\n'},
        {"role": "tool", "tool_call_id": "d", "content": [{"type": "text", "text": "x"}]},
    ]


def test_history_think_blocks_are_cut_into_reasoning_with_the_parser() -> None:
    text = "<think>one</think>Answer<think> two</think> end"
    messages = to_chat({"input": [{"role": "assistant", "content": text}]})["messages"]
    assert messages == [
        {"role": "assistant", "content": "Answer end", "reasoning_content": "one two", "reasoning": "one two"}
    ]


def test_without_the_parser_reasoning_items_become_think_text_and_content_is_untouched() -> None:
    body = {
        "input": [
            {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "R1"}, {"type": "summary_text", "text": "R2"}],
            },
            {"role": "assistant", "content": "<think>old</think>text"},
        ]
    }
    messages = to_chat(body, NO_PARSER)["messages"]
    assert messages == [{"role": "assistant", "content": "<think>R1R2</think><think>old</think>text"}]


def test_text_survives_byte_for_byte() -> None:
    weird = " \t\n\r\n  ünï©ødé 🙂 \u200b\u00a0 trailing  \n\n"
    body = {
        "instructions": weird,
        "input": [
            {"role": "user", "content": weird},
            {"role": "assistant", "content": weird},
            {"type": "function_call", "call_id": weird, "name": "f", "arguments": weird},
            {"type": "function_call_output", "call_id": weird, "output": weird},
        ],
    }
    messages = to_chat(body)["messages"]
    assert messages[0]["content"] == weird
    assert messages[1]["content"] == weird
    assert messages[2]["content"] == weird
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == weird
    assert messages[3]["content"] == weird


# --- Responses request -> Chat request: other fields --------------------------------------------------


def test_tools_are_flattened_to_chat_shape_and_strict_is_dropped() -> None:
    chat = to_chat(
        {
            "input": "hi",
            "tools": [WEATHER_TOOL, {"type": "function", "name": "noargs"}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
        }
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": WEATHER_TOOL["parameters"],
            },
        },
        {"type": "function", "function": {"name": "noargs"}},
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False


@pytest.mark.parametrize("tools", [None, []])
def test_no_tools_means_no_tool_fields(tools: list[JSON] | None) -> None:
    chat = to_chat({"input": "hi", "tools": tools, "tool_choice": "auto", "parallel_tool_calls": True})
    assert "tools" not in chat and "tool_choice" not in chat and "parallel_tool_calls" not in chat


def test_string_tool_choice_passes() -> None:
    assert to_chat({"input": "hi", "tools": [WEATHER_TOOL], "tool_choice": "required"})["tool_choice"] == "required"


def test_sampling_fields_pass_through_and_responses_only_fields_are_dropped() -> None:
    body: JSON = {
        "model": "caller",
        "input": "hi",
        "max_output_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "metadata": {"k": "v"},
        "user": "u1",
        "seed": 3,
        "stop": ["\n\n"],
        "top_k": 20,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "some_future_vllm_field": {"x": [1]},
        "stream": False,
    }
    body.update(dict.fromkeys(RESPONSES_DROPPED_FIELDS, "dropped"))
    before = copy.deepcopy(body)
    chat = to_chat(body)
    assert body == before
    assert chat["model"] == MODEL
    assert chat["max_tokens"] == 64 and "max_output_tokens" not in chat
    for key in ("temperature", "top_p", "metadata", "user", "seed", "stop", "top_k", "min_p", "repetition_penalty"):
        assert chat[key] == body[key]
    assert chat["some_future_vllm_field"] is body["some_future_vllm_field"]
    assert not RESPONSES_DROPPED_FIELDS & chat.keys()
    assert "stream" not in chat


def test_text_format_and_reasoning_effort_map() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = to_chat(
        {
            "input": "hi",
            "text": {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
            "reasoning": {"effort": "low", "summary": "auto"},
        }
    )
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    assert chat["reasoning_effort"] == "low"
    assert "text" not in chat and "reasoning" not in chat
    assert to_chat({"input": "x", "text": {"format": {"type": "json_object"}}})["response_format"] == {
        "type": "json_object"
    }
    assert "response_format" not in to_chat({"input": "x", "text": {"format": {"type": "text"}}})


def test_input_is_not_mutated() -> None:
    body = {
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
            {"role": "assistant", "content": "<think>r</think>a", **token_set(1)},
        ],
        "tools": [WEATHER_TOOL],
    }
    before = copy.deepcopy(body)
    to_chat(body, TOKENS)
    assert body == before


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"input": "hi", "prompt": {"id": "p"}}, "prompt"),
        ({"input": "hi", "stream": True}, "stream"),
        ({"input": "hi", "n": 2}, "n"),
        ({"input": 5}, "input"),
        ({"input": ["hi"]}, "input[0]"),
        ({"input": [{"role": "user", "content": "a"}, {"role": "user"}]}, "input[1].content"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}, "input[0].name"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output"),
        ({"input": [{"type": "web_search_call"}]}, "input[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": ["user"], "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "message", "content": "x"}]}, "input[0].role"),
        ({"input": [{"content": "x"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].image_url",
        ),
        ({"input": [{"role": "assistant", "content": [{"type": "image"}]}]}, "input[0].content[0].type"),
        ({"input": [{"type": "reasoning", "summary": [{"type": "summary_text"}]}]}, "input[0].summary[0].text"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "hi", "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools[0].name"),
        ({"input": "hi", "tools": [WEATHER_TOOL], "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"input": "hi", "text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"input": "hi", "instructions": ["x"]}, "instructions"),
    ],
)
def test_malformed_requests_name_the_field(body: JSON, param: str) -> None:
    with pytest.raises(ConversionError) as info:
        to_chat(body)
    assert info.value.param == param
    assert str(info.value).startswith(f"{param}: ")


# --- token data in requests ---------------------------------------------------------------------------


def test_conversion_leaves_the_token_flags_to_the_model_server() -> None:
    # The model server adds them after its sampling_overrides, so that they always win.
    for opts in (PARSER, TOKENS):
        chat = to_chat({"input": "hi", "top_logprobs": 5}, opts)
        assert not TOKEN_REQUEST_FLAGS & chat.keys()
    add_token_request_flags(chat)
    assert chat["logprobs"] is True
    assert chat["top_logprobs"] == 0
    assert chat["return_token_ids"] is True
    assert chat["return_tokens_as_token_ids"] is True


def test_token_data_goes_back_on_the_matching_assistant_message_only() -> None:
    first, second = token_set(1), token_set(2)
    body = {
        "input": [
            {"role": "user", "content": "q"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", **first},
            {"type": "function_call_output", "call_id": "c", "output": "o"},
            {"role": "assistant", "content": "no token data here"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "answer", **second},
        ]
    }
    messages = to_chat(body, TOKENS)["messages"]
    assert {k: messages[1][k] for k in first} == first
    assert not any(k in messages[3] for k in first)
    assert {k: messages[5][k] for k in second} == second
    assert not any(k in to_chat(body)["messages"][1] for k in first)


def test_same_token_set_repeated_in_one_group_is_fine_but_two_sets_are_not() -> None:
    same = {
        "input": [
            {"role": "assistant", "content": "a", **token_set(1)},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", **token_set(1)},
        ]
    }
    assert to_chat(same, TOKENS)["messages"][0]["generation_token_ids"] == [3, 4]
    two = {
        "input": [
            {"role": "assistant", "content": "a", **token_set(1)},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", **token_set(2)},
        ]
    }
    with pytest.raises(ConversionError) as info:
        to_chat(two, TOKENS)
    assert info.value.param == "input[1]"


@pytest.mark.parametrize("missing", ["prompt_token_ids", "generation_token_ids", "generation_log_probs"])
def test_partial_token_sets_name_the_missing_field(missing: str) -> None:
    item = {"role": "assistant", "content": "a", **token_set(1)}
    del item[missing]
    with pytest.raises(ConversionError) as info:
        to_chat({"input": [{"role": "user", "content": "q"}, item]}, TOKENS)
    assert info.value.param == f"input[1].{missing}"


def test_unequal_generation_lengths_are_refused() -> None:
    item = {"role": "assistant", "content": "a", **token_set(1), "generation_log_probs": [-1.0]}
    with pytest.raises(ConversionError) as info:
        to_chat({"input": [item]}, TOKENS)
    assert info.value.param == "input[0].generation_log_probs"


# --- Chat request passthrough -------------------------------------------------------------------------


def test_chat_passthrough_keeps_every_other_field() -> None:
    body = {
        "model": "caller",
        "messages": [{"role": "user", "content": " hi "}],
        "top_k": 20,
        "min_p": 0.1,
        "repetition_penalty": 1.05,
        "unknown": {"a": 1},
        "max_tokens": 9,
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    before = copy.deepcopy(body)
    out = chat_request_to_upstream(body, MODEL, PARSER)
    assert body == before
    assert out == {**before, "model": MODEL}
    assert out["messages"] is body["messages"]


def test_chat_passthrough_cuts_think_from_assistant_history_only() -> None:
    user = {"role": "user", "content": "<think>keep</think>"}
    assistant = {"role": "assistant", "content": "<think>r1</think>a<think>r2</think>b", "tool_calls": []}
    listed = {"role": "assistant", "content": [{"type": "text", "text": "<think>x</think>y"}]}
    body = {"messages": [user, assistant, listed]}
    before = copy.deepcopy(body)
    out = chat_request_to_upstream(body, MODEL, PARSER)
    assert body == before
    assert out["messages"][0] is user
    assert out["messages"][1] == {
        "role": "assistant",
        "content": "ab",
        "tool_calls": [],
        "reasoning_content": "r1r2",
        "reasoning": "r1r2",
    }
    assert out["messages"][2] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "y"}],
        "reasoning_content": "x",
        "reasoning": "x",
    }
    assert chat_request_to_upstream(body, MODEL, NO_PARSER)["messages"] is body["messages"]


def test_chat_passthrough_mirrors_a_single_reasoning_field_to_both_names() -> None:
    body = {"messages": [{"role": "assistant", "content": "a", "reasoning_content": "r"}]}
    out = chat_request_to_upstream(body, MODEL, PARSER)
    assert out["messages"][0] == {"role": "assistant", "content": "a", "reasoning_content": "r", "reasoning": "r"}


def test_chat_passthrough_developer_role() -> None:
    body = {"messages": [{"role": "developer", "content": "d"}]}
    assert chat_request_to_upstream(body, MODEL, PARSER)["messages"][0]["role"] == "developer"
    opts = ConversionOptions(replace_developer_role_with_system=True)
    assert chat_request_to_upstream(body, MODEL, opts)["messages"][0] == {"role": "system", "content": "d"}
    assert body["messages"][0]["role"] == "developer"


def test_chat_passthrough_token_checks_and_feedback() -> None:
    with_tokens = {"role": "assistant", "content": "a", **token_set(4)}
    body = {"messages": [{"role": "user", "content": "q"}, with_tokens], "top_logprobs": 2}
    out = chat_request_to_upstream(body, MODEL, TOKENS)
    assert out == {**body, "model": MODEL}
    assert out["messages"][1] == with_tokens
    assert "logprobs" not in chat_request_to_upstream(body, MODEL, PARSER)
    add_token_request_flags(out)
    assert out["logprobs"] is True and out["return_token_ids"] is True and out["return_tokens_as_token_ids"] is True
    assert out["top_logprobs"] == 2
    with pytest.raises(ConversionError) as info:
        chat_request_to_upstream({**body, "n": 2}, MODEL, TOKENS)
    assert info.value.param == "n"
    partial = {"role": "assistant", "content": "a", "prompt_token_ids": [1]}
    with pytest.raises(ConversionError) as info:
        chat_request_to_upstream({"messages": [partial]}, MODEL, TOKENS)
    assert info.value.param == "messages[0].generation_token_ids"


@pytest.mark.parametrize(
    ("body", "param"),
    [({"messages": "x"}, "messages"), ({"messages": [1]}, "messages[0]"), ({"messages": [], "stream": True}, "stream")],
)
def test_chat_passthrough_errors(body: JSON, param: str) -> None:
    with pytest.raises(ConversionError) as info:
        chat_request_to_upstream(body, MODEL, PARSER)
    assert info.value.param == param


# --- Chat answer -> Response --------------------------------------------------------------------------


def test_response_object_shape_and_openai_validation() -> None:
    request = {
        "input": "hi",
        "instructions": "be nice",
        "tools": [WEATHER_TOOL],
        "temperature": 0.5,
        "max_output_tokens": 100,
        "metadata": {"a": "b"},
    }
    answer = vllm_answer(" Hello \n")
    answer["usage"]["prompt_tokens_details"] = {"cached_tokens": 4}
    response = chat_response_to_response(answer, request, PARSER)
    assert response["id"].startswith("resp_")
    assert response["object"] == "response"
    assert isinstance(response["created_at"], int)
    assert response["model"] == MODEL
    assert response["status"] == "completed"
    assert response["incomplete_details"] is None
    assert response["error"] is None
    [message] = response["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert message["role"] == "assistant" and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": " Hello \n", "annotations": []}]
    assert response["usage"]["input_tokens"] == 11
    assert response["usage"]["output_tokens"] == 7
    assert response["usage"]["total_tokens"] == 18
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 4
    assert response["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}
    assert response["instructions"] == "be nice"
    assert response["tools"] == [WEATHER_TOOL]
    assert response["tool_choice"] == "auto"
    assert response["parallel_tool_calls"] is True
    assert response["temperature"] == 0.5
    assert response["top_p"] is None
    assert response["max_output_tokens"] == 100
    assert response["metadata"] == {"a": "b"}
    parsed = Response.model_validate(response)
    assert parsed.output_text == " Hello \n"


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_becomes_a_reasoning_item_before_the_rest(field: str) -> None:
    answer = vllm_answer("done", reasoning="thinking\n", reasoning_field=field, tool_calls=[tool_call()])
    output = chat_response_to_response(answer, {}, PARSER)["output"]
    assert [item["type"] for item in output] == ["reasoning", "message", "function_call"]
    assert output[0]["id"].startswith("rs_")
    assert output[0]["summary"] == [{"type": "summary_text", "text": "thinking\n"}]
    Response.model_validate(chat_response_to_response(answer, {}, PARSER))


def test_think_blocks_left_in_content_are_extracted_with_the_parser() -> None:
    answer = vllm_answer("<think>a</think>X<think>b</think>Y", reasoning="field ")
    output = chat_response_to_response(answer, {}, PARSER)["output"]
    assert output[0]["summary"][0]["text"] == "field ab"
    assert output[1]["content"][0]["text"] == "XY"


def test_without_the_parser_content_is_untouched() -> None:
    answer = vllm_answer("<think>a</think>X")
    output = chat_response_to_response(answer, {}, NO_PARSER)["output"]
    assert [item["type"] for item in output] == ["message"]
    assert output[0]["content"][0]["text"] == "<think>a</think>X"


@pytest.mark.parametrize("content", [None, ""])
def test_tool_call_only_answers_have_no_message_item(content: str | None) -> None:
    answer = vllm_answer(content, tool_calls=[tool_call("call_a"), tool_call("call_b", "other", "{}")])
    response = chat_response_to_response(answer, {"tools": [WEATHER_TOOL]}, PARSER)
    output = response["output"]
    assert [item["type"] for item in output] == ["function_call", "function_call"]
    assert output[0]["id"].startswith("fc_")
    assert output[0]["call_id"] == "call_a" and output[0]["name"] == "get_weather"
    assert output[0]["arguments"] == '{"city": "Paris"}' and output[0]["status"] == "completed"
    assert output[1]["call_id"] == "call_b" and output[1]["name"] == "other"
    Response.model_validate(response)


def test_whitespace_content_beside_tool_calls_is_kept() -> None:
    output = chat_response_to_response(vllm_answer("\n\n", tool_calls=[tool_call()]), {}, PARSER)["output"]
    assert output[0]["content"][0]["text"] == "\n\n"


def test_reasoning_only_and_empty_answers_still_have_a_message() -> None:
    output = chat_response_to_response(vllm_answer(None, reasoning="hmm"), {}, PARSER)["output"]
    assert [item["type"] for item in output] == ["reasoning", "message"]
    assert output[1]["content"][0]["text"] == ""
    output = chat_response_to_response(vllm_answer(None), {}, PARSER)["output"]
    assert [item["type"] for item in output] == ["message"]
    response = chat_response_to_response({"model": MODEL, "choices": []}, {}, PARSER)
    assert [item["type"] for item in response["output"]] == ["message"]
    Response.model_validate(response)


def test_length_finish_is_incomplete() -> None:
    response = chat_response_to_response(vllm_answer("cut", finish_reason="length"), {}, PARSER)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    Response.model_validate(response)


def test_response_echoes_request_settings() -> None:
    request = {
        "tool_choice": {"type": "function", "name": "get_weather"},
        "tools": [WEATHER_TOOL],
        "parallel_tool_calls": False,
        "top_p": 0.3,
        "text": {"format": {"type": "text"}},
        "reasoning": {"effort": "high"},
    }
    response = chat_response_to_response(vllm_answer(), request, PARSER)
    assert response["tool_choice"] == request["tool_choice"]
    assert response["parallel_tool_calls"] is False
    assert response["top_p"] == 0.3
    Response.model_validate(response)


# --- token data in answers ----------------------------------------------------------------------------


def test_token_data_goes_on_the_last_output_item() -> None:
    answer = token_answer(reasoning="r", tool_calls=[tool_call("a"), tool_call("b")])
    response = chat_response_to_response(answer, {}, TOKENS)
    *rest, last = response["output"]
    assert last["call_id"] == "b"
    assert last["prompt_token_ids"] == [1, 2, 3]
    assert last["generation_token_ids"] == [5, 6, 7]
    assert last["generation_log_probs"] == [-0.5, -0.25, 0.0]
    assert not any("prompt_token_ids" in item for item in rest)
    Response.model_validate(response)


def test_token_ids_are_read_from_logprob_tokens_when_token_ids_are_missing() -> None:
    answer = vllm_answer(token_ids=[8, 9], log_probs=[-1.0, -2.0], prompt_token_ids=[1])
    del answer["choices"][0]["token_ids"]
    item = chat_response_to_response(answer, {}, TOKENS)["output"][-1]
    assert item["generation_token_ids"] == [8, 9]


def test_token_ids_without_id_tokens_are_taken_as_given() -> None:
    answer = vllm_answer(token_ids=[8, 9], log_probs=[-1.0, -2.0], prompt_token_ids=[1], token_texts=True)
    assert chat_response_to_response(answer, {}, TOKENS)["output"][-1]["generation_token_ids"] == [8, 9]


def test_prompt_ids_fall_back_to_tokenize() -> None:
    answer = vllm_answer(token_ids=[8], log_probs=[-1.0])
    assert needs_prompt_token_ids(answer, TOKENS)
    assert not needs_prompt_token_ids(answer, PARSER)
    assert not needs_prompt_token_ids(token_answer(), TOKENS)
    item = chat_response_to_response(answer, {}, TOKENS, prompt_token_ids=[4, 4])["output"][-1]
    assert item["prompt_token_ids"] == [4, 4]
    with pytest.raises(TokenDataError, match="prompt_token_ids"):
        chat_response_to_response(answer, {}, TOKENS)


def test_empty_generation_is_consistent() -> None:
    answer = vllm_answer("", token_ids=[], prompt_token_ids=[1])
    item = chat_response_to_response(answer, {}, TOKENS)["output"][-1]
    assert item["generation_token_ids"] == [] and item["generation_log_probs"] == []


def _broken(kind: str) -> JSON:
    answer = token_answer()
    choice = answer["choices"][0]
    if kind == "no logprobs":
        choice["logprobs"] = None
    elif kind == "length":
        choice["token_ids"] = [5, 6]
    elif kind == "disagree":
        choice["token_ids"] = [5, 6, 8]
    elif kind == "no logprob value":
        del choice["logprobs"]["content"][1]["logprob"]
    elif kind == "null logprob":
        choice["logprobs"]["content"][1]["logprob"] = None
    elif kind == "text tokens, no ids":
        del choice["token_ids"]
        choice["logprobs"]["content"][0]["token"] = "Hello"
    elif kind == "bad prompt":
        answer["prompt_token_ids"] = "1 2 3"
    return answer


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("no logprobs", "logprobs"),
        ("length", "2 token_ids but 3 logprobs"),
        ("disagree", r"token_ids\[2\] is 8"),
        ("no logprob value", "no logprob"),
        ("null logprob", r"content\[1\].logprob is null"),
        ("text tokens, no ids", "return_tokens_as_token_ids"),
        ("bad prompt", "prompt_token_ids"),
    ],
)
def test_inconsistent_token_data_is_an_error(kind: str, message: str) -> None:
    with pytest.raises(TokenDataError, match=message):
        chat_response_to_response(_broken(kind), {}, TOKENS)
    with pytest.raises(TokenDataError, match=message):
        chat_response_to_caller(_broken(kind), TOKENS)


def test_token_data_is_not_read_when_off() -> None:
    response = chat_response_to_response(_broken("disagree"), {}, PARSER)
    assert "generation_token_ids" not in response["output"][-1]


# --- Chat answer -> caller ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_caller_gets_think_at_the_head_of_content(field: str) -> None:
    answer = vllm_answer(" answer", reasoning="\nthought\n", reasoning_field=field)
    before = copy.deepcopy(answer)
    out = chat_response_to_caller(answer, PARSER)
    assert answer == before
    message = out["choices"][0]["message"]
    assert message["content"] == "<think>\nthought\n</think> answer"
    assert "reasoning" not in message and "reasoning_content" not in message
    ChatCompletion.model_validate(out)


def test_caller_reasoning_with_tool_calls_and_no_content() -> None:
    out = chat_response_to_caller(vllm_answer(None, reasoning="r", tool_calls=[tool_call()]), PARSER)
    assert out["choices"][0]["message"]["content"] == "<think>r</think>"
    assert out["choices"][0]["message"]["tool_calls"] == [tool_call()]


def test_caller_answer_is_untouched_without_parser_or_tokens() -> None:
    answer = vllm_answer("<think>a</think>b", reasoning="r")
    assert chat_response_to_caller(answer, NO_PARSER) is answer


def test_caller_gets_token_data_on_the_message() -> None:
    answer = token_answer()
    before = copy.deepcopy(answer)
    out = chat_response_to_caller(answer, TOKENS)
    assert answer == before
    message = out["choices"][0]["message"]
    assert message["prompt_token_ids"] == [1, 2, 3]
    assert message["generation_token_ids"] == [5, 6, 7]
    assert message["generation_log_probs"] == [-0.5, -0.25, 0.0]
    assert "prompt_token_ids" not in out and "token_ids" not in out["choices"][0]
    assert out["choices"][0]["logprobs"] == answer["choices"][0]["logprobs"]
    ChatCompletion.model_validate(out)


def test_caller_token_data_with_tokenize_fallback_and_errors() -> None:
    answer = vllm_answer(token_ids=[8], log_probs=[-1.0])
    out = chat_response_to_caller(answer, TOKENS, prompt_token_ids=[3])
    assert out["choices"][0]["message"]["prompt_token_ids"] == [3]
    with pytest.raises(TokenDataError):
        chat_response_to_caller(answer, TOKENS)
    with pytest.raises(TokenDataError):
        chat_response_to_caller({"model": MODEL, "choices": []}, TOKENS)


# --- context length -----------------------------------------------------------------------------------


def test_context_length_response() -> None:
    request = {"input": "hi", "tools": [WEATHER_TOOL], "max_output_tokens": 10}
    response = context_length_response(request, MODEL)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["model"] == MODEL
    [message] = response["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["text"] == ""
    assert response["usage"]["input_tokens"] == 0 and response["usage"]["total_tokens"] == 0
    assert Response.model_validate(response).output_text == ""


def test_context_length_chat_response() -> None:
    chat = context_length_chat_response(MODEL)
    [choice] = chat["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"] == {"role": "assistant", "content": ""}
    assert chat["model"] == MODEL
    ChatCompletion.model_validate(chat)


# --- reasoning helper ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", ("plain", "")),
        ("<think>a</think>b", ("b", "a")),
        ("x<think>a</think>y<think>b</think>z", ("xyz", "ab")),
        ("a</think>b", ("a</think>b", "")),
        ("ans<think>cut off", ("ans", "cut off")),
        ("<think></think>", ("", "")),
    ],
)
def test_split_think(text: str, expected: tuple[str, str]) -> None:
    assert split_think(text) == expected
