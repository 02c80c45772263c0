"""Tool-call IDs in the shape the chat template demands.

Mistral's templates (v0.3, Nemo, Small) refuse to render a conversation whose tool-call IDs (in an assistant
turn's `tool_calls` or a tool result's `tool_call_id`) are not 9 alphanumeric characters. Only vLLM's `mistral`
tool parser makes such IDs; its other parsers make `chatcmpl-tool-<32 hex>`, and datasets carry their own
(`call_1`). With such a template, a rollout's second turn could not be rendered on any path.

When start-up finds that the template refuses vLLM's IDs but renders 9-character ones
(responses_api_models/vllm_model/template_lesson.py), the model server writes every other ID, in what it sends
vLLM, as 9 alphanumeric characters derived from it (`family_call_id`): the same ID always gives the same one,
so a call and its result still match, and every turn renders the history before it the same way (the splice
stays exact). The caller's IDs are untouched in what it sends and gets back. Pure functions; no I/O.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Sequence
from typing import Any

from ngym.protocol.shapes import JSON

FAMILY_ID = re.compile(r"[A-Za-z0-9]{9}")
# The shape of the IDs vLLM's tool parsers other than `mistral` make (chatcmpl-tool-<uuid4 hex>).
VLLM_CALL_IDS = ("chatcmpl-tool-8f14e45fceea467a9a36dedd4bea2543", "chatcmpl-tool-c9f0f895fb984b9a8d6d3e1a2b4c5d6e")
_ALPHABET = string.digits + string.ascii_letters


def family_call_id(call_id: str) -> str:
    """`call_id` itself when it is 9 alphanumeric characters; else 9 derived from it (base 62 of its SHA-256)."""
    if FAMILY_ID.fullmatch(call_id):
        return call_id
    number = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    digits = []
    for _ in range(9):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(digits)


def has_other_call_ids(messages: Sequence[Any]) -> bool:
    """Whether any tool call or tool result in `messages` has an ID that is not 9 alphanumeric characters."""
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "tool" and _other(message.get("tool_call_id")):
            return True
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict) and _other(call.get("id")):
                return True
    return False


def with_family_call_ids(messages: Sequence[Any]) -> list[Any]:
    """`messages` with every tool-call ID and tool result's `tool_call_id` written by family_call_id (copies of
    the messages it changes; the others as they are)."""
    out: list[Any] = []
    for message in messages:
        if not isinstance(message, dict):
            out.append(message)
        elif message.get("role") == "tool" and _other(message.get("tool_call_id")):
            out.append({**message, "tool_call_id": family_call_id(message["tool_call_id"])})
        elif any(isinstance(call, dict) and _other(call.get("id")) for call in message.get("tool_calls") or ()):
            out.append({**message, "tool_calls": [_with_family_id(call) for call in message["tool_calls"]]})
        else:
            out.append(message)
    return out


def with_vllm_call_ids(messages: Sequence[JSON]) -> list[JSON]:
    """The probe conversation `messages` (9-character IDs) with vLLM's kind of IDs instead, in order of first use."""
    mapping: dict[str, str] = {}

    def vllm_id(call_id: str) -> str:
        return mapping.setdefault(call_id, VLLM_CALL_IDS[len(mapping) % len(VLLM_CALL_IDS)])

    out: list[JSON] = []
    for message in messages:
        if message.get("role") == "tool":
            out.append({**message, "tool_call_id": vllm_id(message["tool_call_id"])})
        elif message.get("tool_calls"):
            out.append({**message, "tool_calls": [{**c, "id": vllm_id(c["id"])} for c in message["tool_calls"]]})
        else:
            out.append(message)
    return out


def _with_family_id(call: Any) -> Any:
    return {**call, "id": family_call_id(call["id"])} if isinstance(call, dict) and _other(call.get("id")) else call


def _other(call_id: Any) -> bool:
    return isinstance(call_id, str) and FAMILY_ID.fullmatch(call_id) is None
