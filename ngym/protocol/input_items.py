"""Responses `instructions` and `input` items -> Chat Completions messages.

A run of consecutive reasoning, assistant message and function_call items becomes ONE assistant message;
the history format decides where its thinking goes, the token-data mode whether its token data comes back.
"""

from typing import Any

from ngym.protocol.errors import STATELESS, ConversionError
from ngym.protocol.options import ConversionOptions
from ngym.protocol.reasoning import HistoryFormat
from ngym.protocol.shapes import JSON, TokenFields

_INPUT_ROLES = frozenset({"user", "system", "developer"})


def input_to_messages(body: JSON, opts: ConversionOptions) -> list[JSON]:
    """The chat messages for the Responses request `body`: `instructions` first, then `input`."""
    messages: list[JSON] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise ConversionError("must be a string", "instructions")
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    if not isinstance(items, list):
        raise ConversionError("must be a string or a list of input items", "input")
    reasoning = opts.history
    tokens = opts.tokens
    turn: _AssistantTurn | None = None
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConversionError("an input item must be an object", f"input[{index}]")
        kind = item.get("type")
        role = item.get("role") if kind is None or kind == "message" else None
        if role == "assistant" or kind == "reasoning" or kind == "function_call":
            if turn is None:
                turn = _AssistantTurn()
            if kind == "reasoning":
                turn.reasoning.append(_reasoning_text(item, index))
            elif kind == "function_call":
                turn.tool_calls.append(_tool_call(item, index))
            else:
                turn.add_text(_assistant_text(item, index), reasoning)
            fields = tokens.history_fields(item, "input", index)
            if fields is not None:
                turn.add_tokens(fields, index)
            continue
        if turn is not None:
            messages.append(turn.message(reasoning))
            turn = None
        if kind == "function_call_output":
            messages.append(_tool_message(item, index))
        elif kind is None or kind == "message":
            messages.append(_input_message(item, role, index, opts))
        elif kind == "item_reference":
            raise ConversionError(STATELESS, f"input[{index}]")
        else:
            raise ConversionError(f"unsupported input item type {kind!r}", f"input[{index}].type")
    if turn is not None:
        messages.append(turn.message(reasoning))
    return messages


class _AssistantTurn:
    """Consecutive reasoning, assistant message and function_call items: one assistant chat message."""

    __slots__ = ("reasoning", "text", "tokens", "tool_calls")

    def __init__(self) -> None:
        self.reasoning: list[str] = []
        self.text: list[str] = []
        self.tool_calls: list[JSON] = []
        self.tokens: TokenFields | None = None

    def add_text(self, text: str, reasoning: HistoryFormat) -> None:
        text, thought = reasoning.cut(text)
        if thought:
            self.reasoning.append(thought)
        self.text.append(text)

    def add_tokens(self, tokens: TokenFields, index: int) -> None:
        if self.tokens is None:
            self.tokens = tokens
        elif self.tokens != tokens:
            raise ConversionError(
                "one assistant turn (consecutive reasoning/message/function_call items) carries two "
                "different sets of token data; each model call's output must be followed by a user "
                "message or function_call_output",
                f"input[{index}]",
            )

    def message(self, reasoning: HistoryFormat) -> JSON:
        # Content is "" rather than None when there are only tool calls: every chat template renders "",
        # while a template that prints content unguarded would render None as the text "None".
        message: JSON = {"role": "assistant"}
        reasoning.fill_history(message, "".join(self.reasoning), "".join(self.text))
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tokens is not None:
            message.update(self.tokens)
        return message


def _input_message(item: JSON, role: Any, index: int, opts: ConversionOptions) -> JSON:
    if role is None and item.get("type") is None:
        raise ConversionError("an input item needs a type, or a role for a message", f"input[{index}]")
    if not isinstance(role, str) or role not in _INPUT_ROLES:
        raise ConversionError(
            f"role must be user, system, developer or assistant, not {role!r}", f"input[{index}].role"
        )
    if role == "developer" and opts.replace_developer_role_with_system:
        role = "system"
    return {"role": role, "content": _input_content(item.get("content"), f"input[{index}].content")}


def _input_content(content: Any, path: str) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ConversionError("must be a string or a list of content parts", path)
    return [_input_part(part, path, index) for index, part in enumerate(content)]


def _input_part(part: Any, path: str, index: int) -> JSON:
    if not isinstance(part, dict):
        raise ConversionError("a content part must be an object", f"{path}[{index}]")
    kind = part.get("type")
    if kind == "input_text":
        text = part.get("text")
        if not isinstance(text, str):
            raise ConversionError("input_text needs a string text", f"{path}[{index}].text")
        return {"type": "text", "text": text}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise ConversionError(
                "input_image needs image_url (a URL or data: URL); file_id needs a Files API this server does not have",
                f"{path}[{index}].image_url",
            )
        image: JSON = {"url": url}
        detail = part.get("detail")
        if detail is not None:
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    raise ConversionError(
        f"unsupported content part type {kind!r} (input_text and input_image are)", f"{path}[{index}].type"
    )


def _assistant_text(item: JSON, index: int) -> str:
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ConversionError("must be a string or a list of content parts", f"input[{index}].content")
    texts: list[str] = []
    for part_index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        field = "refusal" if kind == "refusal" else "text"
        if kind not in ("output_text", "input_text", "refusal"):
            raise ConversionError(
                f"unsupported assistant content part type {kind!r} (output_text and refusal are)",
                f"input[{index}].content[{part_index}].type",
            )
        text = part.get(field)
        if not isinstance(text, str):
            raise ConversionError(f"{kind} needs a string {field}", f"input[{index}].content[{part_index}].{field}")
        texts.append(text)
    return "".join(texts)


def _reasoning_text(item: JSON, index: int) -> str:
    parts = item.get("summary") or item.get("content") or []
    field = "summary" if item.get("summary") else "content"
    if not isinstance(parts, list):
        raise ConversionError("must be a list of summary_text parts", f"input[{index}].{field}")
    texts: list[str] = []
    for part_index, part in enumerate(parts):
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str):
            raise ConversionError("a reasoning part needs a string text", f"input[{index}].{field}[{part_index}].text")
        texts.append(text)
    return "".join(texts)


def _tool_call(item: JSON, index: int) -> JSON:
    for field in ("call_id", "name", "arguments"):
        if not isinstance(item.get(field), str):
            raise ConversionError(f"a function_call needs a string {field}", f"input[{index}].{field}")
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"]},
    }


def _tool_message(item: JSON, index: int) -> JSON:
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        raise ConversionError("a function_call_output needs a string call_id", f"input[{index}].call_id")
    output = item.get("output")
    if output is None:
        raise ConversionError("a function_call_output needs an output", f"input[{index}].output")
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": _input_content(output, f"input[{index}].output"),
    }
