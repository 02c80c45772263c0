"""Responses API <-> Chat Completions: the names the model server imports, re-exported from where they live.

- `requests.py`: Responses request -> Chat request (`responses_to_chat_request`, the field tables
  `RESPONSES_DROPPED_FIELDS` / `RESPONSES_REJECTED_FIELDS`); the caller's Chat request -> upstream
  (`chat_request_to_upstream`).
- `input_items.py`: Responses `instructions` and `input` items -> chat messages.
- `answers.py`: vLLM's Chat answer -> Response (`chat_response_to_response`) or -> the Chat caller
  (`chat_response_to_caller`, `needs_prompt_token_ids`); the context-length answers.
- `options.py`: `ConversionOptions`, the settings and the objects chosen from them at start-up.
- `reasoning.py`: `<think>` text and the reasoning formats; `tokens.py`: token data and the token-data modes
  (`TokenDataError`); `errors.py`: `ConversionError`; `shapes.py`: `JSON` and `TokenFields`; `ids.py`: ids.
"""

from ngym.protocol.answers import (
    chat_response_to_caller,
    chat_response_to_response,
    context_length_chat_response,
    context_length_response,
    needs_prompt_token_ids,
)
from ngym.protocol.errors import ConversionError
from ngym.protocol.options import ConversionOptions
from ngym.protocol.requests import (
    RESPONSES_DROPPED_FIELDS,
    RESPONSES_REJECTED_FIELDS,
    chat_request_to_upstream,
    responses_to_chat_request,
)
from ngym.protocol.shapes import JSON
from ngym.protocol.tokens import TokenDataError

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
