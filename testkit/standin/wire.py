"""How vLLM 0.32 answers, as the stand-in writes it: the fake byte-level tokeniser (one token per UTF-8 byte,
ChatML markers as single tokens), the chat rendering, error bodies, the reasoning (deepseek_r1) and tool-call
(hermes) parsing of a generation, and chat completion bodies (with prebuilt byte templates for the common case).
Checked against recordings of real vLLM by tests/testkit/test_standin_matches_recordings.py."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

VLLM_VERSION = "0.32.0"
DEFAULT_MAX_MODEL_LEN = 32768  # the byte-level fake tokeniser makes prompts long; 1024 would trip often
DEFAULT_REPLY = "Hello! How can I help you?"
DEFAULT_TOOL_ANSWER = "It is sunny in SF."
DEFAULT_COMPLETION = " The answer is 4."
UNTRUSTED_TEMPLATE_MESSAGE = (
    "Chat template is passed with request, but --trust-request-chat-template is not set. Refused request with "
    "untrusted chat template."
)
CHAT_PATH = "/v1/chat/completions"
GUARDED_PREFIXES = ("/v1", "/v2", "/inference")  # vLLM's --api-key guards these only (not /health, /tokenize)
UNAUTHORIZED_BODY: dict[str, Any] = {"error": "Unauthorized"}
TRANSPORT_KEY = "ngym.transport"

# -- fake tokeniser ------------------------------------------------------------------------------------------
# Ids 0-255 are bytes; markers get single ids above them, like the tiny model's added tokens.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
SPECIAL_IDS = {text: 256 + i for i, text in enumerate(SPECIAL_TOKENS)}
SPECIAL_TEXT = {i: text for text, i in SPECIAL_IDS.items()}
EOS_ID = SPECIAL_IDS["<|im_end|>"]
THINK_START_ID = SPECIAL_IDS["<think>"]
THINK_END_ID = SPECIAL_IDS["</think>"]
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


def fake_tokenize(text: str) -> list[int]:
    ids: list[int] = []
    for piece in _SPECIAL_SPLIT.split(text):
        special = SPECIAL_IDS.get(piece)
        if special is not None:
            ids.append(special)
        elif piece:
            ids.extend(piece.encode())
    return ids


def fake_detokenize(ids: list[int]) -> str:
    out = bytearray()
    for i in ids:
        if i < 256:
            out.append(i)
        elif i != EOS_ID:  # vLLM skips special tokens; <|im_end|> is the only "special" one emitted
            out += SPECIAL_TEXT[i].encode()
    return out.decode(errors="replace")


def fake_token_bytes(token_id: int) -> bytes:
    if token_id >= 256:
        return SPECIAL_TEXT[token_id].encode()
    # A lone non-ASCII byte is an incomplete UTF-8 sequence: vLLM reports no bytes for those.
    return bytes([token_id]) if token_id < 128 else b""


def fake_logprob(token_id: int) -> float:
    return -0.125 * (1 + token_id % 8)


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # vLLM's "string" content format: text parts joined with newlines.
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def render_chat(
    messages: list[dict[str, Any]], tools: list[Any] | None = None, add_generation_prompt: bool = True
) -> str:
    """The tiny model's ChatML template, in Python (only self-consistency with /tokenize matters here)."""
    parts: list[str] = []
    body = messages
    system = ""
    if messages and messages[0].get("role") in ("system", "developer"):
        system, body = _text_of(messages[0].get("content")), messages[1:]
    if tools:
        listed = "".join("\n" + json.dumps(t) for t in tools)
        prefix = system + "\n\n" if system else ""
        parts.append(f"<|im_start|>system\n{prefix}# Tools\n<tools>{listed}\n</tools><|im_end|>\n")
    elif system:
        parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for message in body:
        role = message.get("role")
        if role == "assistant":
            reasoning = message.get("reasoning")
            text = f"<think>{reasoning}</think>" if isinstance(reasoning, str) and reasoning else ""
            content = _text_of(message.get("content"))
            text += content
            for n, call in enumerate(message.get("tool_calls") or []):
                fn = call.get("function", call)
                args = fn.get("arguments")
                args_text = args if isinstance(args, str) else json.dumps(args)
                # Like the template: a newline only after content or a previous call, so a call-only turn
                # renders exactly as the model generated it.
                text += "\n" if content or n else ""
                text += f'<tool_call>\n{{"name": {json.dumps(fn.get("name"))}, "arguments": {args_text}}}'
                text += "\n</tool_call>"
            parts.append(f"<|im_start|>assistant\n{text}<|im_end|>\n")
        elif role == "tool":
            parts.append(
                f"<|im_start|>tool\n<tool_response>\n{_text_of(message.get('content'))}\n</tool_response><|im_end|>\n"
            )
        else:
            shown = "system" if role == "developer" else role
            parts.append(f"<|im_start|>{shown}\n{_text_of(message.get('content'))}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


def vllm_error_body(status: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase
    err_type = _ERROR_TYPES.get(status, phrase)
    return {"error": {"message": message or phrase, "type": err_type, "param": param, "code": status}}


def context_length_error_body(max_model_len: int = 1024) -> dict[str, Any]:
    # vLLM stops counting at max_model_len + 1 tokens, hence "at least".
    n = max_model_len + 1
    message = (
        f"This model's maximum context length is {max_model_len} tokens. However, your prompt contains at least "
        f"{n} input tokens, which exceeds this limit even without any output tokens. Please reduce the length of "
        f"the input prompt. (parameter=input_tokens, value={n})"
    )
    return vllm_error_body(400, message, "input_tokens")


def max_tokens_error_body(max_tokens: int, max_model_len: int) -> dict[str, Any]:
    message = (
        f"max_tokens={max_tokens} cannot be greater than max_model_len={max_model_len}. "
        f"Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})"
    )
    return vllm_error_body(400, message, "max_tokens")


def unknown_model_error_body(model: str, served: str) -> dict[str, Any]:
    return vllm_error_body(404, f"The model `{model}` does not exist. Valid aliases: {served}.", "model")


@dataclass(frozen=True)
class _Generation:
    message: dict[str, Any]
    finish_reason: str
    token_ids: list[int]
    reasoning_tokens: int


def _parse_generation(
    text: str, *, reasoning_parser: bool, tools_parsed: bool, ids: list[int], finished: bool, tool_ids: Iterator[str]
) -> _Generation:
    """Apply vLLM's deepseek_r1 reasoning split and hermes tool-call extraction to generated text."""
    reasoning: str | None = None
    content: str | None = text
    if reasoning_parser:
        _, start, rest = text.partition("<think>")
        after_start = rest if start else text
        if "</think>" in after_start:
            reasoning, _, tail = after_start.partition("</think>")
            content = tail or None
        else:
            reasoning, content = after_start, None
    tool_calls: list[dict[str, Any]] = []
    if tools_parsed and content and "<tool_call>" in content:
        for raw in re.findall(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", content, re.DOTALL):
            try:
                call = json.loads(raw[0] or raw[1])
                function = {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}
            except (ValueError, KeyError, TypeError):
                tool_calls = []  # like vLLM: a malformed call leaves the whole text as content
                break
            tool_calls.append({"id": next(tool_ids), "type": "function", "function": function})
        if tool_calls:
            content = content[: content.find("<tool_call>")] or None
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    message["reasoning"] = reasoning
    finish = ("tool_calls" if tool_calls else "stop") if finished else "length"
    return _Generation(message, finish, ids, _count_reasoning_tokens(ids) if reasoning_parser else 0)


def _count_reasoning_tokens(ids: list[int]) -> int:
    count = depth = 0
    for i in ids:
        if i == THINK_START_ID:
            depth += 1
        elif i == THINK_END_ID:
            depth = max(0, depth - 1)
        elif depth:
            count += 1
    return count


def _logprobs(ids: list[int], as_ids: bool, top: int) -> dict[str, Any]:
    entries = []
    for i in ids:
        token = f"token_id:{i}" if as_ids else fake_token_bytes(i).decode(errors="replace") or "\ufffd"
        entry: dict[str, Any] = {"token": token, "logprob": fake_logprob(i), "bytes": list(fake_token_bytes(i))}
        # The fake model has no alternatives to offer: its top-k list holds just the sampled token.
        entry["top_logprobs"] = [dict(entry)] if top > 0 else []
        entries.append(entry)
    return {"content": entries}


def _chat_body(
    *,
    rid: str,
    created: int,
    model: str,
    fingerprint: str,
    gen: _Generation,
    logprobs: dict[str, Any] | None,
    return_ids: bool,
    prompt_ids: list[int] | None,
    prompt_tokens: Any,
    total_tokens: Any,
    reasoning_parser: bool,
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": gen.message,
                "logprobs": logprobs,
                "finish_reason": gen.finish_reason,
                "stop_reason": None,
                "token_ids": gen.token_ids if return_ids else None,
                "routed_experts": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": fingerprint,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": total_tokens,
            "completion_tokens": len(gen.token_ids),
            "prompt_tokens_details": None,
            "completion_tokens_details": {"reasoning_tokens": gen.reasoning_tokens} if reasoning_parser else None,
        },
        "prompt_logprobs": None,
        "prompt_token_ids": prompt_ids if return_ids else None,
        "prompt_text": None,
        "kv_transfer_params": None,
        "ec_transfer_params": None,
        "metrics": None,
    }


class _ByteTemplate:
    """A JSON body as literal byte chunks with slots, so the hot path is one ``bytes.join``."""

    def __init__(self, body: dict[str, Any], slots: tuple[str, ...]) -> None:
        raw = orjson.dumps(body)
        self.chunks: list[bytes] = []
        for slot in slots:
            marker = orjson.dumps(f"@@{slot}@@")
            head, found, raw = raw.partition(marker)
            if not found:
                raise ValueError(f"slot {slot} missing from template")
            self.chunks.append(head)
        self.tail = raw

    def fill(self, *values: bytes) -> bytes:
        return b"".join(itertools.chain.from_iterable(zip(self.chunks, values, strict=True))) + self.tail


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
