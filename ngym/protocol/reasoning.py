"""Thinking text: `<think>...</think>` blocks in content, vLLM's separate reasoning fields, the two reasoning
formats of vLLM's answers (chosen at start-up from `uses_reasoning_parser`) and the three formats of the history
sent back to vLLM (chosen from that, `uses_interleaved_reasoning` and `preserve_reasoning_in_assistant_content`)."""

from typing import Any, Protocol

from ngym.protocol.shapes import JSON

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def split_think(text: str) -> tuple[str, str]:
    """Cut every `<think>...</think>` block out of `text`; return (remaining text, block bodies in order).

    An opening tag without a closing one takes the rest of the text: generation stopped mid-thought.
    A closing tag without an opening one is ordinary text.
    """
    start = text.find(THINK_OPEN)
    if start < 0:
        return text, ""
    kept: list[str] = []
    thought: list[str] = []
    pos = 0
    while start >= 0:
        kept.append(text[pos:start])
        body = start + len(THINK_OPEN)
        end = text.find(THINK_CLOSE, body)
        if end < 0:
            thought.append(text[body:])
            pos = len(text)
            break
        thought.append(text[body:end])
        pos = end + len(THINK_CLOSE)
        start = text.find(THINK_OPEN, pos)
    kept.append(text[pos:])
    return "".join(kept), "".join(thought)


def with_think(reasoning: str, text: str) -> str:
    """`text` with `reasoning` as one `<think>` block ahead of it; no block when there is no reasoning."""
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{text}" if reasoning else text


def message_reasoning(message: dict[str, Any]) -> str:
    """vLLM's thinking beside the content: `reasoning` (newer vLLM) or `reasoning_content` (older)."""
    value = message.get("reasoning") or message.get("reasoning_content")
    return value if isinstance(value, str) else ""


class HistoryFormat(Protocol):
    """Where the thinking of earlier assistant turns goes in the messages sent to vLLM. Stateless."""

    def cut(self, text: str) -> tuple[str, str]:
        """(text, thinking) of text the model wrote: vLLM's answer content or an assistant history message."""
        ...

    def fill_history(self, message: JSON, reasoning: str, text: str) -> None:
        """Set the content (and reasoning fields) of an assistant message built from Responses history."""
        ...

    def history_to_vllm(self, message: JSON) -> JSON:
        """A Chat caller's assistant history message as vLLM should see it (the same object if unchanged)."""
        ...


class ReasoningFormat(HistoryFormat, Protocol):
    """Where thinking lives in the chat messages exchanged with vLLM. Stateless: one instance serves every
    request. A reasoning field vLLM sends is read in either format (`message_reasoning`). Its history methods are
    the default history format for the same parser setting."""

    # Whether `answer_to_caller` changes anything (if not, and token data is off, a Chat answer passes as is).
    edits_caller_answer: bool

    def answer_to_caller(self, message: JSON) -> None:
        """vLLM's answer message as the Chat caller should see it; `message` is our own copy, changed in place."""
        ...


class SeparateReasoning:
    """vLLM runs a reasoning parser: thinking travels in `reasoning` / `reasoning_content`, beside the content.

    `<think>` blocks in text are cut out into those fields; the Chat caller gets the thinking back as one
    `<think>` block at the head of content, so it appears in one place only.
    """

    __slots__ = ()
    edits_caller_answer = True

    def cut(self, text: str) -> tuple[str, str]:
        return split_think(text)

    def fill_history(self, message: JSON, reasoning: str, text: str) -> None:
        message["content"] = text
        if reasoning:
            message["reasoning_content"] = reasoning
            message["reasoning"] = reasoning

    def history_to_vllm(self, message: JSON) -> JSON:
        """The message with its `<think>` blocks moved into both reasoning fields. With no blocks, a single
        existing reasoning field is copied to both names; when there are blocks, the blocks win."""
        content = message.get("content")
        thought = ""
        if isinstance(content, str) and THINK_OPEN in content:
            content, thought = split_think(content)
        elif isinstance(content, list):
            content, thought = _cut_think_parts(content)
        reasoning = thought or message_reasoning(message)
        if content is message.get("content") and (
            not reasoning or (message.get("reasoning") == reasoning and message.get("reasoning_content") == reasoning)
        ):
            return message
        new = dict(message)
        new["content"] = content
        if reasoning:
            new["reasoning_content"] = reasoning
            new["reasoning"] = reasoning
        return new

    def answer_to_caller(self, message: JSON) -> None:
        reasoning = message_reasoning(message)
        message.pop("reasoning", None)
        message.pop("reasoning_content", None)
        if reasoning:
            message["content"] = with_think(reasoning, message.get("content") or "")


class InlineReasoning:
    """No reasoning parser: thinking is part of the content as the model wrote it, and content passes
    untouched. Reasoning from Responses history goes back as one `<think>` block ahead of the text."""

    __slots__ = ()
    edits_caller_answer = False

    def cut(self, text: str) -> tuple[str, str]:
        return text, ""

    def fill_history(self, message: JSON, reasoning: str, text: str) -> None:
        message["content"] = with_think(reasoning, text)

    def history_to_vllm(self, message: JSON) -> JSON:
        return message

    def answer_to_caller(self, message: JSON) -> None:
        return None


class DroppedReasoning:
    """History only (`uses_interleaved_reasoning: false`): earlier turns go back without their thinking, for
    models that never see their past reasoning. `<think>` blocks are cut out of the content and the reasoning
    fields are left out."""

    __slots__ = ()

    def cut(self, text: str) -> tuple[str, str]:
        return split_think(text)

    def fill_history(self, message: JSON, reasoning: str, text: str) -> None:
        message["content"] = text

    def history_to_vllm(self, message: JSON) -> JSON:
        content = message.get("content")
        if isinstance(content, str) and THINK_OPEN in content:
            content, _ = split_think(content)
        elif isinstance(content, list):
            content, _ = _cut_think_parts(content)
        if content is message.get("content") and "reasoning" not in message and "reasoning_content" not in message:
            return message
        new = {key: value for key, value in message.items() if key not in ("reasoning", "reasoning_content")}
        new["content"] = content
        return new


SEPARATE_REASONING = SeparateReasoning()
INLINE_REASONING = InlineReasoning()
DROPPED_REASONING = DroppedReasoning()


def reasoning_format(uses_reasoning_parser: bool) -> ReasoningFormat:
    """The format for a vLLM that runs a reasoning parser (or not): chosen once, at start-up."""
    return SEPARATE_REASONING if uses_reasoning_parser else INLINE_REASONING


def history_format(uses_reasoning_parser: bool, interleaved: bool = True, preserve: bool = False) -> HistoryFormat:
    """How earlier turns' thinking goes back to vLLM, as NeMo Gym's settings say: without a reasoning parser, or
    with `preserve_reasoning_in_assistant_content`, as the model wrote it (`<think>` in content); otherwise in the
    reasoning fields (`uses_interleaved_reasoning`, the default) or not at all."""
    if not uses_reasoning_parser or preserve:
        return INLINE_REASONING
    return SEPARATE_REASONING if interleaved else DROPPED_REASONING


def _cut_think_parts(parts: list[Any]) -> tuple[list[Any], str]:
    thoughts: list[str] = []
    result = parts
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") != "text":
            continue
        text = part.get("text")
        if not isinstance(text, str) or THINK_OPEN not in text:
            continue
        kept, thought = split_think(text)
        thoughts.append(thought)
        if result is parts:
            result = list(parts)
        result[index] = {**part, "text": kept}
    return result, "".join(thoughts)
