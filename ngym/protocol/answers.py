"""vLLM's Chat Completions answers -> a Response, or the answer returned to a Chat caller; and the empty
answers given when a prompt does not fit the model's context."""

import time
from typing import Any

from ngym.protocol.ids import new_id
from ngym.protocol.options import ConversionOptions
from ngym.protocol.reasoning import ReasoningFormat, message_reasoning
from ngym.protocol.shapes import JSON

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
    text, thought = opts.reasoning.cut(content if isinstance(content, str) else "")
    reasoning = message_reasoning(message) + thought
    tool_calls = message.get("tool_calls") or []
    output: list[JSON] = []
    if reasoning:
        output.append(_reasoning_item(reasoning))
    # A reply with only reasoning (or nothing at all) still gets a message, so callers always find one.
    if text or not tool_calls:
        output.append(_message_item(text))
    output.extend(_function_call_item(call) for call in tool_calls)
    opts.tokens.add_to_item(output[-1], chat, choice, prompt_token_ids)
    model = chat.get("model") or request.get("model") or ""
    return _response(request, model, output, choice.get("finish_reason"), _usage(chat.get("usage")))


def context_length_response(request: JSON, model: str) -> JSON:
    """Empty incomplete Response (status 'incomplete', incomplete_details.reason 'max_output_tokens',
    one empty assistant message item, usage zeros)."""
    return empty_response(request, model, "length")


def empty_response(request: JSON, model: str, finish_reason: str) -> JSON:
    """A Response with one empty assistant message for a turn vLLM was not asked to generate: `length` (the
    prompt does not fit) or `content_filter` (a turn of only thinking, with `sequential_reasoning_allowed: false`)."""
    return _response(request, model, [_message_item("")], finish_reason, _usage(None))


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


# ---------------------------------------------------------------------------------------------------
# Chat Completions answer -> the Chat caller (the model server's own /v1/chat/completions)


def chat_response_to_caller(chat: JSON, opts: ConversionOptions, prompt_token_ids: list[int] | None = None) -> JSON:
    """vLLM's Chat Completions answer as returned to the caller: thinking as `<think>` at the head of content
    (the separate reasoning fields removed), token data on each assistant message."""
    if not opts.edits_caller_answer:
        return chat
    choices = chat.get("choices")
    if not isinstance(choices, list) or not choices:
        opts.tokens.require_choices()
        return chat
    out = dict(chat)
    out["choices"] = [_caller_choice(choice, opts.reasoning) for choice in choices]
    opts.tokens.add_to_caller_answer(out, prompt_token_ids)
    return out


def _caller_choice(choice: JSON, reasoning: ReasoningFormat) -> JSON:
    """A copy of `choice` holding a copy of its message, in the reasoning format the caller sees."""
    new_choice = dict(choice)
    message = dict(choice.get("message") or {"role": "assistant", "content": None})
    reasoning.answer_to_caller(message)
    new_choice["message"] = message
    return new_choice


def needs_prompt_token_ids(chat: JSON, opts: ConversionOptions) -> bool:
    """True when token info is on and vLLM's answer lacks top-level prompt_token_ids (caller must fetch
    them via /tokenize and pass them in)."""
    return opts.tokens.needs_prompt_token_ids(chat)


def context_length_chat_response(model: str) -> JSON:
    """Chat completion with one choice, empty assistant content, finish_reason 'length'."""
    return empty_chat_response(model, "length")


def empty_chat_response(model: str, finish_reason: str) -> JSON:
    """Chat completion with one choice, empty assistant content and the given finish_reason (see empty_response)."""
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
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
