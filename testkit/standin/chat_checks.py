"""The stand-in's checks of a chat completion request, answered as vLLM answers them (a 400, never a 500).

vLLM validates `/v1/chat/completions` bodies with pydantic (lax: `1.0` is an int, `"0.5"` a float) and answers a
failure with its validation-error body (see tests/data/vllm_recordings/chat_bad_request.json). These models
cover the fields the stand-in reads; others are ignored, as vLLM ignores fields it does not know.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from testkit.standin.tokens import load_body, validation_error_body


class _Lax(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Part(_Lax):
    type: str


class _Function(_Lax):
    name: str
    arguments: str | None = None


class _ToolCall(_Lax):
    id: str | None = None
    type: str | None = None
    function: _Function


class _Message(_Lax):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None


class _FunctionSpec(_Lax):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _Tool(_Lax):
    type: Literal["function"] = "function"
    function: _FunctionSpec


class ChatRequestShape(_Lax):
    model: str | None = None
    messages: list[_Message]
    tools: list[_Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_logprobs: Annotated[int, Field(ge=0)] | None = None
    n: Annotated[int, Field(ge=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool | None = None
    return_token_ids: bool | None = None
    return_tokens_as_token_ids: bool | None = None
    stream: bool | None = None


def checked_chat_request(raw: bytes) -> tuple[dict[str, Any] | None, Response | None]:
    """The request body, or vLLM's 400 naming the first field that is wrong (`body.messages.1.content`)."""
    body, refused = load_body(raw)
    if refused is not None:
        return None, refused
    try:
        ChatRequestShape.model_validate(body)
    except ValidationError as exc:
        errors = [
            {
                "type": error["type"],
                "loc": ".".join(["body", *(str(part) for part in error["loc"])]),
                "msg": error["msg"],
                "input": error.get("input"),
            }
            for error in exc.errors()
        ]
        return None, Response(orjson.dumps(validation_error_body(errors)), 400, media_type="application/json")
    return body, None
