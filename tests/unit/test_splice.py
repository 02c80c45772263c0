"""The token splice: each turn's prompt begins with the previous turn's prompt + generated IDs, then exactly the
template's tokens for what came after; anything that cannot be cut cleanly is an error naming the turn."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngym.protocol.splice import (
    SPLICE_MARKERS,
    SpliceError,
    TurnTemplate,
    last_token_turn,
    render_messages,
    splice_prompt,
)
from testkit.standin.wire import EOS_ID, fake_tokenize, render_chat

NEWLINE = ord("\n")


def render(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
    return fake_tokenize(render_chat(messages, None, add_generation_prompt))


def learn(render_ids: Any = render) -> TurnTemplate:
    conversations = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}] for marker in SPLICE_MARKERS
    ]
    return TurnTemplate.learn(*(render_ids(c, False) for c in conversations))


def model_turn(prompt: list[int], generated: list[int], **message: Any) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": message.pop("content", "whatever the caller shows"),
        "prompt_token_ids": prompt,
        "generation_token_ids": generated,
        "generation_log_probs": [-0.5] * len(generated),
        **message,
    }


def next_prompt(messages: list[dict[str, Any]], render_ids: Any = render) -> list[int]:
    turn = last_token_turn(messages)
    assert turn is not None
    return splice_prompt(turn, render_ids(render_messages(messages, turn)), learn(render_ids))


def test_the_template_lesson_finds_the_marker_and_the_closing() -> None:
    template = learn()
    assert bytes(template.marker_ids).decode() == SPLICE_MARKERS[0]
    assert template.closing_ids == (EOS_ID, NEWLINE)


def test_a_turn_that_stopped_on_end_of_turn_gets_the_rest_of_the_closing_only() -> None:
    prompt = render([{"role": "user", "content": "Weather?"}])
    generated = [*b"Sunny", EOS_ID]
    messages = [
        {"role": "user", "content": "Weather?"},
        model_turn(prompt, generated),
        {"role": "user", "content": "Ok"},
    ]
    spliced = next_prompt(messages)
    assert spliced == [
        *prompt,
        *generated,
        NEWLINE,
        *fake_tokenize("<|im_start|>user\nOk<|im_end|>\n<|im_start|>assistant\n"),
    ]


def test_a_turn_cut_by_max_tokens_gets_the_whole_closing_once() -> None:
    prompt = render([{"role": "user", "content": "Weather?"}])
    generated = list(b"Sun")
    messages = [
        {"role": "user", "content": "Weather?"},
        model_turn(prompt, generated),
        {"role": "user", "content": "Ok"},
    ]
    spliced = next_prompt(messages)
    tail = spliced[len(prompt) + len(generated) :]
    assert tail[:2] == [EOS_ID, NEWLINE] and tail.count(EOS_ID) == 2  # the closing, then the user message's own


def test_the_model_tokens_are_kept_even_when_they_do_not_re_tokenise_the_same() -> None:
    # Tokens no tokenizer would produce from the text ("Sunny" as one made-up ID), and history text that
    # disagrees with them: the prompt carries the tokens, never the text.
    prompt = [9000, 9001]
    generated = [7777, EOS_ID]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        model_turn(prompt, generated, content="Something else entirely"),
        {"role": "user", "content": "Thanks"},
    ]
    assert next_prompt(messages)[:4] == [9000, 9001, 7777, EOS_ID]


def test_tool_calls_of_the_turn_are_rendered_before_its_end_and_tool_results_follow() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "SF"}'}}
    prompt = render([{"role": "user", "content": "Weather in SF?"}])
    generated = [
        *fake_tokenize('<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call>'),
        EOS_ID,
    ]
    messages = [
        {"role": "user", "content": "Weather in SF?"},
        model_turn(prompt, generated, content="", tool_calls=[call]),
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    spliced = next_prompt(messages)
    expected_tail = "\n<|im_start|>tool\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    assert spliced == [*prompt, *generated, *fake_tokenize(expected_tail)]


def test_only_the_last_turn_with_token_data_anchors_the_prompt() -> None:
    first_prompt = render([{"role": "user", "content": "A"}])
    first = model_turn(first_prompt, [*b"B", EOS_ID])
    second_prompt = [
        *first_prompt,
        *b"B",
        EOS_ID,
        *fake_tokenize("\n<|im_start|>user\nC<|im_end|>\n<|im_start|>assistant\n"),
    ]
    second = model_turn(second_prompt, [*b"D", EOS_ID])
    messages = [
        {"role": "user", "content": "A"},
        first,
        {"role": "user", "content": "C"},
        second,
        {"role": "user", "content": "E"},
    ]
    spliced = next_prompt(messages)
    assert spliced[: len(second_prompt) + 2] == [*second_prompt, *b"D", EOS_ID]
    assert last_token_turn(messages).index == 3  # type: ignore[union-attr]


def test_render_messages_drop_token_data_and_put_the_marker_in_place_of_the_turn() -> None:
    messages = [
        {"role": "user", "content": "A"},
        model_turn([1], [2], content="old"),
        {"role": "user", "content": "C"},
        model_turn([1, 2, 3], [4], content="new", reasoning="why"),
    ]
    turn = last_token_turn(messages)
    rendered = render_messages(messages, turn)
    assert rendered[1] == {"role": "assistant", "content": "old"}
    assert rendered[3] == {"role": "assistant", "content": SPLICE_MARKERS[0]}
    assert messages[1]["prompt_token_ids"] == [1]  # the caller's messages are not changed


def test_a_template_that_drops_the_turn_content_is_an_error_naming_the_turn() -> None:
    def drops_old_content(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        kept = [
            {**m, "content": ""} if m["role"] == "assistant" and index < len(messages) - 1 else m
            for index, m in enumerate(messages)
        ]
        return render(kept, add_generation_prompt)

    prompt = render([{"role": "user", "content": "A"}])
    messages = [{"role": "user", "content": "A"}, model_turn(prompt, [*b"B", EOS_ID]), {"role": "user", "content": "C"}]
    with pytest.raises(SpliceError, match=r"assistant turn 1 \(messages\[1\]\).*not found.*cannot be cut exactly"):
        next_prompt(messages, drops_old_content)


def test_the_marker_twice_in_the_prompt_is_an_error() -> None:
    prompt = render([{"role": "user", "content": "A"}])
    messages = [
        {"role": "user", "content": "A"},
        model_turn(prompt, [*b"B", EOS_ID]),
        {"role": "user", "content": "I quote: " + SPLICE_MARKERS[0]},
    ]
    with pytest.raises(SpliceError, match="found 2 times"):
        next_prompt(messages)


def test_a_template_with_nothing_after_assistant_content_cannot_be_learnt() -> None:
    with pytest.raises(SpliceError, match="writes nothing after"):
        TurnTemplate.learn([1, 2, *b"ngym"], [1, 2, *b"Wvbq"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt_token_ids", [1, "2"]),
        ("prompt_token_ids", [1, -2]),
        ("generation_token_ids", [1.5]),
        ("prompt_token_ids", []),
    ],
)
def test_token_ids_in_history_must_be_token_ids(field: str, value: Any) -> None:
    message = model_turn([1, 2], [3])
    message[field] = value
    with pytest.raises(SpliceError, match=rf"messages\[1\]\.{field}"):
        last_token_turn([{"role": "user", "content": "A"}, message])


def test_no_turn_with_token_data_means_no_splice() -> None:
    assert last_token_turn([{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"}]) is None


# A tokenizer that merges adjacent letter pairs: the marker's edge tokens then depend on the text around it.
def merging_tokenize(text: str) -> list[int]:
    ids = fake_tokenize(text)
    out: list[int] = []
    index = 0
    while index < len(ids):
        a = ids[index]
        b = ids[index + 1] if index + 1 < len(ids) else None
        if b is not None and chr(a).isalpha() and a < 128 and b < 128 and chr(b).isalpha():
            out.append(1000 + a * 128 + b)
            index += 2
        else:
            out.append(a)
            index += 1
    return out


def merging_render(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
    return merging_tokenize(render_chat(messages, None, add_generation_prompt))


texts = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="<>"), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    first=texts,
    generated=st.lists(
        st.integers(min_value=0, max_value=255) | st.integers(min_value=300, max_value=5000), max_size=12
    ),
    stopped=st.booleans(),
    follow_ups=st.lists(st.tuples(st.sampled_from(["user", "tool", "system"]), texts), min_size=0, max_size=3),
    shown=texts,
    merging=st.booleans(),
)
def test_the_next_prompt_always_begins_with_the_turn_and_ends_with_the_template_suffix(
    first: str, generated: list[int], stopped: bool, follow_ups: list[tuple[str, str]], shown: str, merging: bool
) -> None:
    tokens = merging_render if merging else render
    history = [{"role": "user", "content": first}]
    prompt = tokens(history)
    generation = [*generated, EOS_ID] if stopped else generated
    after = [{"role": role, "content": text} for role, text in follow_ups]
    messages = [*history, model_turn(prompt, generation, content=shown), *after]
    spliced = next_prompt(messages, tokens)
    seen = [*prompt, *generation]
    assert spliced[: len(seen)] == seen
    closing = [EOS_ID, NEWLINE]
    owed = closing[1:] if stopped else closing
    assert spliced[len(seen) : len(seen) + len(owed)] == owed
    # What follows the closing is the template's rendering of everything after the turn.
    turn_text = render_chat([*history, {"role": "assistant", "content": "x"}], None, False)
    full_text = render_chat([*history, {"role": "assistant", "content": "x"}, *after], None, True)
    assert full_text.startswith(turn_text)
    suffix_text = full_text[len(turn_text) :]
    assert spliced[len(seen) + len(owed) :] == (merging_tokenize if merging else fake_tokenize)(suffix_text)
