"""Requests for vLLM's /v1/chat/completions: from a Responses request, or from a Chat caller's request.

Neither asks vLLM for token data: the model server adds those flags (`tokens.add_token_request_flags`)
after its configured `sampling_overrides`, so that they always win.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ngym.protocol.errors import STATELESS, ConversionError
from ngym.protocol.input_items import input_to_messages
from ngym.protocol.options import ConversionOptions
from ngym.protocol.shapes import JSON

# Responses request fields with no Chat Completions counterpart (server-side state, background runs, ...): dropped on
# purpose, since vLLM's chat route has nothing they could mean.
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
        "previous_response_id": STATELESS,
        "conversation": STATELESS,
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


# ---------------------------------------------------------------------------------------------------
# Responses request -> Chat Completions request


def responses_to_chat_request(body: JSON, model: str, opts: ConversionOptions) -> JSON:
    """The body for vLLM's /v1/chat/completions that answers the Responses request `body`."""
    _refuse_unsupported(body)
    out: JSON = {"model": model, "messages": input_to_messages(body, opts)}
    for key, value in body.items():
        if key not in _NOT_PASSED_THROUGH:
            out[key] = value
    max_output_tokens = body.get("max_output_tokens")
    if max_output_tokens is not None:
        out["max_tokens"] = max_output_tokens
    _map_tools(body, out)
    _map_text_format(body.get("text"), out)
    _map_reasoning(body.get("reasoning"), out)
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


# ---------------------------------------------------------------------------------------------------
# Chat Completions request -> Chat Completions request (the model server's own /v1/chat/completions)


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
    opts.tokens.check_chat_request(body)
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
    # Checked only: a Chat caller's assistant message carries its token data back as it is.
    opts.tokens.history_fields(message, "messages", index)
    return opts.history.history_to_vllm(message)


def ends_in_thinking_only(messages: list[Any]) -> bool:
    """Whether the conversation ends in an assistant turn with no text and no tool calls (only thinking, which the
    history format moved out of the content or dropped): with `sequential_reasoning_allowed: false` the model is
    not called again to think more."""
    last = messages[-1] if messages else None
    return (
        isinstance(last, dict)
        and last.get("role") == "assistant"
        and not last.get("content")
        and not last.get("tool_calls")
    )
