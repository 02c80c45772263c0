"""Responses API <-> Chat Completions, reasoning text and token data: pure functions, no I/O.

Inputs are never mutated; outputs share the caller's unchanged sub-objects (lists of token IDs, tool
schemas, untouched messages) instead of copying them.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ngym.protocol.ids import new_id
from ngym.protocol.reasoning import THINK_OPEN, message_reasoning, split_think, with_think
from ngym.protocol.tokens import (
    TOKEN_FIELDS,
    TokenDataError,
    add_token_request_flags,
    read_token_data,
)

JSON = dict[str, Any]

__all__ = [
    "JSON",
    "RESPONSES_DROPPED_FIELDS",
    "RESPONSES_REJECTED_FIELDS",
    "ConversionError",
    "ConversionOptions",
    "TokenDataError",
    "chat_request_to_upstream",
    "chat_response_to_caller",
    "chat_response_to_response",
    "context_length_chat_response",
    "context_length_response",
    "needs_prompt_token_ids",
    "responses_to_chat_request",
]

# Responses request fields with no Chat Completions counterpart, dropped on purpose (README.md says why).
RESPONSES_DROPPED_FIELDS = frozenset(
    {
        "access_programs",
        "background",
        "background_options",
        "context_management",
        "image",
        "include",
        "max_tool_calls",
        "moderation",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "store",
        "stream_options",
        "top_logprobs",
        "truncation",
    }
)

# Fields that need state kept by the server; a non-null value is refused rather than ignored.
RESPONSES_REJECTED_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "previous_response_id": "this server is stateless: send the whole conversation in `input` instead",
        "conversation": "this server is stateless: send the whole conversation in `input` instead",
        "prompt": "stored prompt templates are not supported: send `instructions` and `input` instead",
    }
)

# Responses fields this module maps itself; every other field passes through to vLLM untouched.
_RESPONSES_MAPPED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "stream",
        "n",
        "messages",
    }
)
_NOT_PASSED_THROUGH = _RESPONSES_MAPPED | RESPONSES_DROPPED_FIELDS | frozenset(RESPONSES_REJECTED_FIELDS)

_INPUT_ROLES = frozenset({"user", "system", "developer"})


class ConversionError(ValueError):
    """Bad caller input.

    `.param` is the dotted/indexed path of the offending field, e.g. 'input[3].call_id'.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message if param is None else f"{param}: {message}")
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class ConversionOptions:
    uses_reasoning_parser: bool = True
    replace_developer_role_with_system: bool = False
    return_token_id_information: bool = False


# ---------------------------------------------------------------------------------------------------
# Responses request -> Chat Completions request


def responses_to_chat_request(body: JSON, model: str, opts: ConversionOptions) -> JSON:
    """The body for vLLM's /v1/chat/completions that answers the Responses request `body`."""
    _refuse_unsupported(body)
    out: JSON = {"model": model, "messages": _input_to_messages(body, opts)}
    for key, value in body.items():
        if key not in _NOT_PASSED_THROUGH:
            out[key] = value
    max_output_tokens = body.get("max_output_tokens")
    if max_output_tokens is not None:
        out["max_tokens"] = max_output_tokens
    _map_tools(body, out)
    _map_text_format(body.get("text"), out)
    _map_reasoning(body.get("reasoning"), out)
    if opts.return_token_id_information:
        add_token_request_flags(out)
    return out


def _refuse_unsupported(body: JSON) -> None:
    for key, why in RESPONSES_REJECTED_FIELDS.items():
        if body.get(key) is not None:
            raise ConversionError(why, key)
    if body.get("stream"):
        raise ConversionError("streaming is not supported yet; send stream: false", "stream")
    n = body.get("n")
    if n is not None and n != 1:
        raise ConversionError("a Response holds one answer; n must be 1", "n")
    if "messages" in body:
        raise ConversionError("`messages` is a Chat Completions field; a Responses request uses `input`", "messages")


def _map_tools(body: JSON, out: JSON) -> None:
    tools = body.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise ConversionError("must be a list of tools", "tools")
    out["tools"] = [_chat_tool(tool, index) for index, tool in enumerate(tools)]
    tool_choice = body.get("tool_choice")
    if tool_choice is not None:
        out["tool_choice"] = _chat_tool_choice(tool_choice)
    parallel_tool_calls = body.get("parallel_tool_calls")
    if parallel_tool_calls is not None:
        out["parallel_tool_calls"] = parallel_tool_calls


def _chat_tool(tool: Any, index: int) -> JSON:
    if not isinstance(tool, dict):
        raise ConversionError("a tool must be an object", f"tools[{index}]")
    if tool.get("type") != "function":
        raise ConversionError(f"only function tools are supported, not {tool.get('type')!r}", f"tools[{index}].type")
    name = tool.get("name")
    if not isinstance(name, str):
        raise ConversionError(
            "a function tool needs a string name (Responses tools are flat: {type, name, parameters})",
            f"tools[{index}].name",
        )
    function: JSON = {"name": name}
    description = tool.get("description")
    if description is not None:
        function["description"] = description
    parameters = tool.get("parameters")
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise ConversionError("a function tool_choice needs a string name", "tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    raise ConversionError("must be 'auto', 'none', 'required' or {type: function, name}", "tool_choice")


def _map_text_format(text: Any, out: JSON) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise ConversionError("must be an object", "text")
    fmt = text.get("format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        out["response_format"] = {"type": "json_object"}
        return
    if kind != "json_schema":
        raise ConversionError("must be 'text', 'json_object' or 'json_schema'", "text.format.type")
    for required in ("name", "schema"):
        if fmt.get(required) is None:
            raise ConversionError(f"a json_schema format needs {required}", f"text.format.{required}")
    schema = {key: fmt[key] for key in ("name", "schema", "description", "strict") if fmt.get(key) is not None}
    out["response_format"] = {"type": "json_schema", "json_schema": schema}


def _map_reasoning(reasoning: Any, out: JSON) -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise ConversionError("must be an object", "reasoning")
    effort = reasoning.get("effort")
    if effort is not None:
        out["reasoning_effort"] = effort


class _AssistantTurn:
    """Consecutive reasoning, assistant message and function_call items: one assistant chat message."""

    __slots__ = ("reasoning", "text", "tokens", "tool_calls")

    def __init__(self) -> None:
        self.reasoning: list[str] = []
        self.text: list[str] = []
        self.tool_calls: list[JSON] = []
        self.tokens: JSON | None = None

    def add_text(self, text: str, uses_reasoning_parser: bool) -> None:
        if uses_reasoning_parser and THINK_OPEN in text:
            text, thought = split_think(text)
            self.reasoning.append(thought)
        self.text.append(text)

    def add_tokens(self, tokens: JSON, index: int) -> None:
        if self.tokens is None:
            self.tokens = tokens
        elif self.tokens != tokens:
            raise ConversionError(
                "one assistant turn (consecutive reasoning/message/function_call items) carries two "
                "different sets of token data; each model call's output must be followed by a user "
                "message or function_call_output",
                f"input[{index}]",
            )

    def message(self, uses_reasoning_parser: bool) -> JSON:
        reasoning = "".join(self.reasoning)
        text = "".join(self.text)
        # Content is "" rather than None when there are only tool calls: every chat template renders "",
        # while a template that prints content unguarded would render None as the text "None".
        message: JSON = {"role": "assistant"}
        if uses_reasoning_parser:
            message["content"] = text
            if reasoning:
                message["reasoning_content"] = reasoning
                message["reasoning"] = reasoning
        else:
            message["content"] = with_think(reasoning, text)
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.tokens is not None:
            message.update(self.tokens)
        return message


def _input_to_messages(body: JSON, opts: ConversionOptions) -> list[JSON]:
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
    parser = opts.uses_reasoning_parser
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
                turn.add_text(_assistant_text(item, index), parser)
            if opts.return_token_id_information:
                tokens = _token_fields(item, "input", index)
                if tokens is not None:
                    turn.add_tokens(tokens, index)
            continue
        if turn is not None:
            messages.append(turn.message(parser))
            turn = None
        if kind == "function_call_output":
            messages.append(_tool_message(item, index))
        elif kind is None or kind == "message":
            messages.append(_input_message(item, role, index, opts))
        elif kind == "item_reference":
            raise ConversionError(RESPONSES_REJECTED_FIELDS["previous_response_id"], f"input[{index}]")
        else:
            raise ConversionError(f"unsupported input item type {kind!r}", f"input[{index}].type")
    if turn is not None:
        messages.append(turn.message(parser))
    return messages


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


def _token_fields(item: JSON, container: str, index: int) -> JSON | None:
    """The token data an item/message carries back from an earlier turn; a partial set is an error."""
    if all(item.get(field) is None for field in TOKEN_FIELDS):
        return None
    prompt, generation, log_probs = (_token_list(item, field, container, index) for field in TOKEN_FIELDS)
    if len(generation) != len(log_probs):
        raise ConversionError(
            f"generation_token_ids has {len(generation)} entries, "
            f"generation_log_probs {len(log_probs)}; they must be equally long",
            f"{container}[{index}].generation_log_probs",
        )
    return {"prompt_token_ids": prompt, "generation_token_ids": generation, "generation_log_probs": log_probs}


def _token_list(item: JSON, field: str, container: str, index: int) -> list[Any]:
    value = item.get(field)
    if not isinstance(value, list):
        state = "missing" if value is None else f"a {type(value).__name__}"
        raise ConversionError(
            f"token data needs all of {', '.join(TOKEN_FIELDS)} as lists; {field} is {state}",
            f"{container}[{index}].{field}",
        )
    return value


# ---------------------------------------------------------------------------------------------------
# Chat Completions answer -> Response


def chat_response_to_response(
    chat: JSON, request: JSON, opts: ConversionOptions, prompt_token_ids: list[int] | None = None
) -> JSON:
    """The Response object for vLLM's Chat Completions answer `chat` to the Responses request `request`."""
    choices = chat.get("choices")
    choice: JSON = choices[0] if isinstance(choices, list) and choices else {}
    message: JSON = choice.get("message") or {}
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    reasoning = message_reasoning(message)
    if opts.uses_reasoning_parser and THINK_OPEN in text:
        text, thought = split_think(text)
        reasoning += thought
    tool_calls = message.get("tool_calls") or []
    output: list[JSON] = []
    if reasoning:
        output.append(_reasoning_item(reasoning))
    # A reply with only reasoning (or nothing at all) still gets a message, so callers always find one.
    if text or not tool_calls:
        output.append(_message_item(text))
    output.extend(_function_call_item(call) for call in tool_calls)
    if opts.return_token_id_information:
        output[-1].update(read_token_data(chat, choice, prompt_token_ids).as_fields())
    model = chat.get("model") or request.get("model") or ""
    return _response(request, model, output, choice.get("finish_reason"), _usage(chat.get("usage")))


def _reasoning_item(reasoning: str) -> JSON:
    return {
        "type": "reasoning",
        "id": new_id("rs_"),
        "summary": [{"type": "summary_text", "text": reasoning}],
    }


def _message_item(text: str) -> JSON:
    return {
        "type": "message",
        "id": new_id("msg_"),
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _function_call_item(call: JSON) -> JSON:
    function = call.get("function") or {}
    return {
        "type": "function_call",
        "id": new_id("fc_"),
        "call_id": call.get("id") or new_id("call_"),
        "name": function.get("name") or "",
        "arguments": function.get("arguments") or "",
        "status": "completed",
    }


def _usage(usage: Any) -> JSON:
    usage = usage if isinstance(usage, dict) else {}
    input_tokens = usage.get("prompt_tokens") or 0
    output_tokens = usage.get("completion_tokens") or 0
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": usage.get("total_tokens") or input_tokens + output_tokens,
        # cache_write_tokens: the openai client's ResponseUsage requires it; vLLM has no such count.
        "input_tokens_details": {
            "cached_tokens": prompt_details.get("cached_tokens") or 0,
            "cache_write_tokens": 0,
        },
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
    }


def _response(request: JSON, model: str, output: list[JSON], finish_reason: Any, usage: JSON) -> JSON:
    incomplete = None
    if finish_reason == "length":
        incomplete = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        incomplete = {"reason": "content_filter"}
    response: JSON = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": "completed" if incomplete is None else "incomplete",
        "incomplete_details": incomplete,
        "error": None,
        "output": output,
        "usage": usage,
        "instructions": request.get("instructions"),
        "tools": request.get("tools") or [],
        "tool_choice": request.get("tool_choice") or "auto",
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata"),
    }
    for key in ("text", "reasoning", "user"):
        value = request.get(key)
        if value is not None:
            response[key] = value
    return response


def context_length_response(request: JSON, model: str) -> JSON:
    """Empty incomplete Response (status 'incomplete', incomplete_details.reason 'max_output_tokens',
    one empty assistant message item, usage zeros)."""
    return _response(request, model, [_message_item("")], "length", _usage(None))


# ---------------------------------------------------------------------------------------------------
# Chat Completions passthrough (the model server's own /v1/chat/completions)


def chat_request_to_upstream(body: JSON, model: str, opts: ConversionOptions) -> JSON:
    """The caller's Chat Completions request as sent to vLLM; fields we do not handle pass untouched."""
    if body.get("stream"):
        raise ConversionError("streaming is not supported yet; send stream: false", "stream")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ConversionError("must be a list of messages", "messages")
    out = dict(body)
    out["model"] = model
    out["messages"] = _upstream_messages(messages, opts)
    if opts.return_token_id_information:
        n = body.get("n")
        if n is not None and n != 1:
            raise ConversionError("token data is returned for exactly one choice; n must be 1", "n")
        add_token_request_flags(out)
    return out


def _upstream_messages(messages: list[Any], opts: ConversionOptions) -> list[Any]:
    result = messages
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ConversionError("a message must be an object", f"messages[{index}]")
        new = _upstream_message(message, index, opts)
        if new is not message:
            if result is messages:
                result = list(messages)
            result[index] = new
    return result


def _upstream_message(message: JSON, index: int, opts: ConversionOptions) -> JSON:
    role = message.get("role")
    if role == "developer" and opts.replace_developer_role_with_system:
        return {**message, "role": "system"}
    if role != "assistant":
        return message
    if opts.return_token_id_information:
        _token_fields(message, "messages", index)
    if not opts.uses_reasoning_parser:
        return message
    return _cut_history_think(message)


def _cut_history_think(message: JSON) -> JSON:
    """An assistant history message with its `<think>` blocks moved into both reasoning fields."""
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


def chat_response_to_caller(chat: JSON, opts: ConversionOptions, prompt_token_ids: list[int] | None = None) -> JSON:
    """vLLM's Chat Completions answer as returned to the caller: thinking as `<think>` at the head of content
    (the separate reasoning fields removed), token data on each assistant message."""
    if not opts.uses_reasoning_parser and not opts.return_token_id_information:
        return chat
    choices = chat.get("choices")
    if not isinstance(choices, list) or not choices:
        if opts.return_token_id_information:
            raise TokenDataError("vLLM's answer has no choices, so there is no token data")
        return chat
    out = dict(chat)
    out["choices"] = [_caller_choice(chat, choice, opts, prompt_token_ids) for choice in choices]
    if opts.return_token_id_information:
        out.pop("prompt_token_ids", None)
    return out


def _caller_choice(chat: JSON, choice: JSON, opts: ConversionOptions, prompt_token_ids: list[int] | None) -> JSON:
    new_choice = dict(choice)
    message = dict(choice.get("message") or {"role": "assistant", "content": None})
    if opts.uses_reasoning_parser:
        reasoning = message_reasoning(message)
        message.pop("reasoning", None)
        message.pop("reasoning_content", None)
        if reasoning:
            message["content"] = with_think(reasoning, message.get("content") or "")
    if opts.return_token_id_information:
        message.update(read_token_data(chat, choice, prompt_token_ids).as_fields())
        new_choice.pop("token_ids", None)
    new_choice["message"] = message
    return new_choice


def needs_prompt_token_ids(chat: JSON, opts: ConversionOptions) -> bool:
    """True when token info is on and vLLM's answer lacks top-level prompt_token_ids (caller must fetch
    them via /tokenize and pass them in)."""
    return opts.return_token_id_information and chat.get("prompt_token_ids") is None


def context_length_chat_response(model: str) -> JSON:
    """Chat completion with one choice, empty assistant content, finish_reason 'length'."""
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
