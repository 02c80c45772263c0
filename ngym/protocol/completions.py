"""Completions mode (`use_completions_api`): a Chat Completions request as a request for vLLM's /v1/completions,
and vLLM's text-completion answer in the shape of a chat completion, so the answer side treats both alike.

NeMo Gym's raw mode: the prompt is the text of at most one system message and exactly one user message, joined
by a blank line, sent as is; tools, other turns and non-text content are refused. Render mode (the chat template
renders the messages) lifts the turn rules; content must still be text. Pure functions; no I/O.
"""

from __future__ import annotations

from typing import Any

from ngym.protocol.errors import ConversionError
from ngym.protocol.shapes import JSON

COMPLETIONS_PATH = "/v1/completions"
RAW_JOIN = "\n\n"
_TEXT_PARTS = ("text", "input_text")
# Chat Completions fields with no /v1/completions counterpart: the prompt replaces them, or they are mapped.
_CHAT_ONLY_FIELDS = frozenset(
    {
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "chat_template",
        "chat_template_kwargs",
        "add_generation_prompt",
        "continue_final_message",
        "documents",
        "reasoning_effort",
        "include_reasoning",
        "metadata",
        "max_completion_tokens",
        "logprobs",
        "top_logprobs",
        "return_token_ids",
        "return_tokens_as_token_ids",
    }
)


def raw_prompt(messages: list[Any]) -> str:
    """The prompt of raw mode: `[user]` or `[system, user]`, their text joined by a blank line."""
    if not messages:
        raise ConversionError("there is no message to make a prompt of", "messages")
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if len(messages) > 2:
        raise ConversionError(
            f"use_completions_api: true (raw prompts) accepts at most one system and one user message, got "
            f"{len(messages)} messages; render the prompt upstream and send one user message, or set "
            "render_chat_template: true",
            "messages",
        )
    if len(messages) == 2 and roles != ["system", "user"]:
        raise ConversionError(
            f"use_completions_api: true (raw prompts) needs the two messages to be [system, user], got {roles}",
            "messages",
        )
    if len(messages) == 1 and roles[0] != "user":
        raise ConversionError(
            f"use_completions_api: true (raw prompts) needs a user message, got role {roles[0]!r}", "messages[0].role"
        )
    return RAW_JOIN.join(message_text(message, index) for index, message in enumerate(messages))


def check_text_only(messages: list[Any]) -> None:
    """Render mode: every message's content is text (or absent, e.g. an assistant turn with only tool calls)."""
    for index, message in enumerate(messages):
        if isinstance(message, dict) and message.get("content") is not None:
            message_text(message, index)


def message_text(message: Any, index: int) -> str:
    """A message's text: string content, or its text parts joined with nothing between them."""
    if not isinstance(message, dict):
        raise ConversionError("a message must be an object", f"messages[{index}]")
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        shown = "null" if content is None else type(content).__name__
        raise ConversionError(
            f"use_completions_api: true needs text content (a string or text parts), got {shown}",
            f"messages[{index}].content",
        )
    texts: list[str] = []
    for part_index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        text = part.get("text") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(text, str):
            raise ConversionError(
                f"use_completions_api: true accepts only text content parts (/v1/completions is text-only), "
                f"got {kind!r}",
                f"messages[{index}].content[{part_index}]",
            )
        texts.append(text)
    return "".join(texts)


def completions_request(payload: JSON, prompt: str | list[int], token_data: bool) -> JSON:
    """The /v1/completions body for the chat request `payload` (its settings already applied): every field that
    means the same on both routes passes untouched (sampling, stop, seed, structured outputs, vLLM's extras);
    `max_completion_tokens` becomes `max_tokens`, the chat log-probs flags the completions' count of
    alternatives. With token data, vLLM is asked for prompt and generated IDs inline."""
    out: JSON = {key: value for key, value in payload.items() if key not in _CHAT_ONLY_FIELDS}
    out["prompt"] = prompt
    if out.get("max_tokens") is None and payload.get("max_completion_tokens") is not None:
        out["max_tokens"] = payload["max_completion_tokens"]
    top_logprobs = payload.get("top_logprobs")
    if top_logprobs is not None:
        out["logprobs"] = top_logprobs
    elif payload.get("logprobs") is True or token_data:
        out["logprobs"] = 0
    if token_data:
        out["return_token_ids"] = True
        out["return_tokens_as_token_ids"] = True
    return out


def completion_prompt_ids(answer: JSON) -> list[int] | None:
    """The prompt's token IDs vLLM returned inline on the first choice, if it did."""
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    ids = choice.get("prompt_token_ids")
    return ids if isinstance(ids, list) else None


def chat_from_completion(answer: JSON, model: str, prompt_token_ids: list[int] | None) -> JSON:
    """vLLM's text completion as a chat completion: each choice's text is the assistant message's content (any
    `<think>` in it is left for the reasoning format to read), its token data in the chat answer's places
    (`token_ids`, `logprobs.content` with `token_id:N` tokens, top-level `prompt_token_ids`)."""
    choices = answer.get("choices")
    chat_choices = [_chat_choice(c, i) for i, c in enumerate(choices if isinstance(choices, list) else [])]
    chat: JSON = {
        "id": answer.get("id") or "chatcmpl-completions",
        "object": "chat.completion",
        "created": answer.get("created"),
        "model": answer.get("model") or model,
        "choices": chat_choices,
        "usage": answer.get("usage"),
    }
    if prompt_token_ids is not None:
        chat["prompt_token_ids"] = prompt_token_ids
    return chat


def _chat_choice(choice: Any, index: int) -> JSON:
    choice = choice if isinstance(choice, dict) else {}
    text = choice.get("text")
    out: JSON = {
        "index": choice.get("index", index),
        "message": {"role": "assistant", "content": text if isinstance(text, str) else "", "tool_calls": None},
        "logprobs": _chat_logprobs(choice.get("logprobs")),
        "finish_reason": choice.get("finish_reason") or "stop",
        "stop_reason": choice.get("stop_reason"),
    }
    token_ids = choice.get("token_ids")
    if token_ids is not None:
        out["token_ids"] = token_ids
    return out


def _chat_logprobs(logprobs: Any) -> JSON | None:
    """Completions log-probs (`tokens`, `token_logprobs` side by side) as chat log-probs entries; the checks of
    the token-data reader (lengths, `token_id:N`, nulls) then apply as on the chat path."""
    if not isinstance(logprobs, dict):
        return None
    values = logprobs.get("token_logprobs")
    if not isinstance(values, list):
        return None
    tokens = logprobs.get("tokens")
    tokens = tokens if isinstance(tokens, list) and len(tokens) == len(values) else [None] * len(values)
    content = [
        {"token": token if isinstance(token, str) else None, "logprob": value, "bytes": None}
        for token, value in zip(tokens, values, strict=True)
    ]
    return {"content": content}
