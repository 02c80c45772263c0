"""The objects chosen at start-up (ngym.protocol.options, reasoning, tokens)."""

import copy
import dataclasses
import itertools
from typing import Any

import pytest

from ngym.protocol.errors import ConversionError
from ngym.protocol.options import ConversionOptions
from ngym.protocol.reasoning import INLINE_REASONING, SEPARATE_REASONING, reasoning_format
from ngym.protocol.tokens import (
    TOKEN_DATA_OFF,
    TOKEN_DATA_ON,
    TokenDataError,
    add_token_request_flags,
    token_data_mode,
)

JSON = dict[str, Any]
TOKENS = {"prompt_token_ids": [1, 2], "generation_token_ids": [3], "generation_log_probs": [-0.5]}


def token_choice() -> JSON:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": "a"},
        "token_ids": [3],
        "logprobs": {"content": [{"token": "token_id:3", "logprob": -0.5}]},
    }


# --- ConversionOptions --------------------------------------------------------------------------------


@pytest.mark.parametrize(("parser", "developer", "token_info"), list(itertools.product([True, False], repeat=3)))
def test_options_choose_their_objects_once(parser: bool, developer: bool, token_info: bool) -> None:
    opts = ConversionOptions(
        uses_reasoning_parser=parser,
        replace_developer_role_with_system=developer,
        return_token_id_information=token_info,
    )
    assert opts == ConversionOptions(parser, developer, token_info)
    assert hash(opts) == hash(ConversionOptions(parser, developer, token_info))
    assert opts.reasoning is (SEPARATE_REASONING if parser else INLINE_REASONING)
    assert opts.tokens is (TOKEN_DATA_ON if token_info else TOKEN_DATA_OFF)
    assert opts.edits_caller_answer is (parser or token_info)
    assert opts.replace_developer_role_with_system is developer


def test_options_defaults_repr_and_immutability() -> None:
    opts = ConversionOptions()
    assert (opts.uses_reasoning_parser, opts.replace_developer_role_with_system) == (True, False)
    assert opts.return_token_id_information is False
    assert repr(opts) == (
        "ConversionOptions(uses_reasoning_parser=True, replace_developer_role_with_system=False, "
        "return_token_id_information=False, uses_interleaved_reasoning=True, "
        "preserve_reasoning_in_assistant_content=False, sequential_reasoning_allowed=True)"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.uses_reasoning_parser = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.tokens = TOKEN_DATA_ON  # type: ignore[misc]


def test_factories() -> None:
    assert reasoning_format(True) is SEPARATE_REASONING and reasoning_format(False) is INLINE_REASONING
    assert token_data_mode(True) is TOKEN_DATA_ON and token_data_mode(False) is TOKEN_DATA_OFF


# --- reasoning formats --------------------------------------------------------------------------------


def test_separate_reasoning() -> None:
    assert SEPARATE_REASONING.cut("<think>a</think>b") == ("b", "a")
    message: JSON = {"role": "assistant"}
    SEPARATE_REASONING.fill_history(message, "r", "t")
    assert message == {"role": "assistant", "content": "t", "reasoning_content": "r", "reasoning": "r"}
    message = {"role": "assistant"}
    SEPARATE_REASONING.fill_history(message, "", "t")
    assert message == {"role": "assistant", "content": "t"}
    plain = {"role": "assistant", "content": "x"}
    assert SEPARATE_REASONING.history_to_vllm(plain) is plain
    both = {"role": "assistant", "content": "x", "reasoning": "r", "reasoning_content": "r"}
    assert SEPARATE_REASONING.history_to_vllm(both) is both
    answer: JSON = {"role": "assistant", "content": None, "reasoning_content": "r", "reasoning": None}
    SEPARATE_REASONING.answer_to_caller(answer)
    assert answer == {"role": "assistant", "content": "<think>r</think>"}
    assert SEPARATE_REASONING.edits_caller_answer is True


def test_inline_reasoning_leaves_content_alone() -> None:
    assert INLINE_REASONING.cut("<think>a</think>b") == ("<think>a</think>b", "")
    message: JSON = {"role": "assistant"}
    INLINE_REASONING.fill_history(message, "r", "<think>x</think>t")
    assert message == {"role": "assistant", "content": "<think>r</think><think>x</think>t"}
    history = {"role": "assistant", "content": "<think>a</think>b", "reasoning": "r"}
    assert INLINE_REASONING.history_to_vllm(history) is history
    answer = {"role": "assistant", "content": "b", "reasoning": "r"}
    before = copy.deepcopy(answer)
    INLINE_REASONING.answer_to_caller(answer)
    assert answer == before
    assert INLINE_REASONING.edits_caller_answer is False


# --- token-data modes ---------------------------------------------------------------------------------


def test_token_data_on_reads_history_and_shares_the_lists() -> None:
    item = {"type": "function_call", **TOKENS}
    fields = TOKEN_DATA_ON.history_fields(item, "input", 0)
    assert fields == TOKENS
    assert fields is not None
    assert fields["prompt_token_ids"] is item["prompt_token_ids"]
    assert fields["generation_token_ids"] is item["generation_token_ids"]
    assert fields["generation_log_probs"] is item["generation_log_probs"]
    assert TOKEN_DATA_ON.history_fields({"type": "message"}, "input", 0) is None
    with pytest.raises(ConversionError) as info:
        TOKEN_DATA_ON.history_fields({"prompt_token_ids": [1]}, "messages", 4)
    assert info.value.param == "messages[4].generation_token_ids"


def test_token_data_off_ignores_everything() -> None:
    assert TOKEN_DATA_OFF.history_fields({"prompt_token_ids": "garbage"}, "input", 0) is None
    TOKEN_DATA_OFF.check_chat_request({"n": 5})
    assert TOKEN_DATA_OFF.needs_prompt_token_ids({}) is False
    item: JSON = {"type": "message"}
    TOKEN_DATA_OFF.add_to_item(item, {}, {}, None)
    assert item == {"type": "message"}
    TOKEN_DATA_OFF.require_choices()
    answer: JSON = {"choices": [token_choice()], "prompt_token_ids": [1, 2]}
    before = copy.deepcopy(answer)
    TOKEN_DATA_OFF.add_to_caller_answer(answer, None)
    assert answer == before
    assert TOKEN_DATA_OFF.enabled is False


def test_token_data_on_puts_token_data_on_answers() -> None:
    with pytest.raises(ConversionError) as info:
        TOKEN_DATA_ON.check_chat_request({"n": 2})
    assert info.value.param == "n"
    TOKEN_DATA_ON.check_chat_request({"n": 1})
    assert TOKEN_DATA_ON.needs_prompt_token_ids({}) is True
    assert TOKEN_DATA_ON.needs_prompt_token_ids({"prompt_token_ids": []}) is False
    item: JSON = {"type": "message"}
    TOKEN_DATA_ON.add_to_item(item, {"prompt_token_ids": [1, 2]}, token_choice(), None)
    assert item == {"type": "message", **TOKENS}
    with pytest.raises(TokenDataError, match="no choices"):
        TOKEN_DATA_ON.require_choices()
    answer: JSON = {"choices": [token_choice()]}
    TOKEN_DATA_ON.add_to_caller_answer(answer, [1, 2])
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "a", **TOKENS}
    assert "token_ids" not in answer["choices"][0] and "logprobs" in answer["choices"][0]
    assert TOKEN_DATA_ON.enabled is True


@pytest.mark.parametrize(
    ("body", "top_logprobs"), [({}, 0), ({"top_logprobs": None}, 0), ({"top_logprobs": 3, "logprobs": False}, 3)]
)
def test_add_token_request_flags(body: JSON, top_logprobs: int) -> None:
    add_token_request_flags(body)
    assert body["logprobs"] is True and body["top_logprobs"] == top_logprobs
    assert body["return_token_ids"] is True and body["return_tokens_as_token_ids"] is True
