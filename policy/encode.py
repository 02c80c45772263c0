"""Render conversations with the chat template (as vLLM does) and turn them into token ids and loss labels."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from policy.data import Message, Sample
from policy.template import CHAT_TEMPLATE, IM_END, IM_START

IGNORE = -100


def render(messages: list[Message], tools: list[dict[str, Any]] | None, add_generation_prompt: bool = False) -> str:
    """The prompt text vLLM builds: transformers' own Jinja rendering of the chat template."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        [messages], tools=tools, chat_template=CHAT_TEMPLATE, add_generation_prompt=add_generation_prompt
    )
    return str(rendered[0])


def assistant_spans(sample: Sample) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation's text, and the character spans the model generates: each assistant turn's
    text up to and including its <|im_end|> (the newline after it is the template's, not the model's)."""
    spans = []
    for index, message in enumerate(sample.messages):
        if message["role"] != "assistant":
            continue
        start = len(render(sample.messages[:index], sample.tools, add_generation_prompt=True))
        through = render(sample.messages[: index + 1], sample.tools)
        end = len(through) - 1
        if not through[:end].endswith(IM_END):
            raise ValueError(f"assistant turn {index} does not end in {IM_END}: {through[-40:]!r}")
        spans.append((start, end))
    return render(sample.messages, sample.tools), spans


def tool_result_name_spans(sample: Sample, text: str) -> list[tuple[int, int]]:
    """The character spans of the city inside the tool results (it is there twice) in the whole text.

    Only the name: the weather word there is a hash of the city, and a model trained to guess it goes on
    guessing it in the answer, where it must copy it."""
    spans = []
    position = 0
    for message in sample.messages:
        if message["role"] != "tool":
            continue
        # Tool results are rendered in order, each after its own tag: search on from the previous one.
        head = "<tool_response>\n" + message["content"]
        position = text.index(head, position) + len("<tool_response>\n")
        found = re.finditer(re.escape(sample.city), message["content"])
        spans += [(position + match.start(), position + match.end()) for match in found]
    return spans


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    labels: list[int]  # what the model generates: ids inside assistant spans, IGNORE elsewhere
    # What training predicts: the labels, and also the city in the tool results. The model never writes those,
    # but they repeat the name it called for, so they are extra practice at copying, at no extra cost.
    targets: list[int]
    prefix_length: int  # the system turn (instructions and tools), which many conversations share


def encode(tokenizer: Any, sample: Sample) -> Encoded:
    """Token ids of the conversation, its labels and its training targets."""
    text, spans = assistant_spans(sample)
    encoding = tokenizer.encode(text, add_special_tokens=False)
    starts = {start for start, _ in encoding.offsets}
    ends = {end for _, end in encoding.offsets}
    for start, end in spans:
        # A token straddling a span edge would mean the prompt alone tokenises differently at inference.
        if start not in starts or end not in ends:
            raise ValueError(f"assistant span {start}:{end} does not fall on token boundaries in {text!r}")

    def inside(spans: list[tuple[int, int]]) -> list[int]:
        return [
            token if any(start <= offset[0] < end for start, end in spans) else IGNORE
            for token, offset in zip(encoding.ids, encoding.offsets, strict=True)
        ]

    turn_starts = [i for i, token in enumerate(encoding.tokens) if token == IM_START]
    return Encoded(
        ids=list(encoding.ids),
        labels=inside(spans),
        targets=inside(spans + tool_result_name_spans(sample, text)),
        prefix_length=turn_starts[1],
    )
