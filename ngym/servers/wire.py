"""What agents and resources servers receive, checked once at the boundary.

These models check the shapes a server's own code relies on (a task row's `responses_create_params`, a finished
`response` and its output items) so that a caller's mistake is a 422 naming the field, never a crash deep inside
a verifier. They accept every field they do not name (`extra="allow"`): the model server checks the rest of a
Responses request in full, and a row's own fields (`expected_city`, ...) travel on untouched. Handlers keep using
the body as received; the models are the check and give typed access to what they name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Tag


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    type: str
    text: str | None = None


class InputMessage(_Open):
    type: Literal["message"] | None = None
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]


class FunctionCall(_Open):
    type: Literal["function_call"]
    name: str
    arguments: str
    call_id: str


class FunctionCallOutput(_Open):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[ContentPart]


class Reasoning(_Open):
    type: Literal["reasoning"]
    summary: list[ContentPart] = []
    content: list[ContentPart] | None = None


class OtherItem(_Open):
    """An item type these servers do not look into; the model server decides whether it is valid."""

    type: str


def _item_kind(item: Any) -> str:
    if not isinstance(item, dict):
        return "other"  # fails OtherItem's validation with "should be a valid dictionary"
    kind = item.get("type")
    if kind is None and "role" in item:
        return "message"
    return kind if kind in ("message", "function_call", "function_call_output", "reasoning") else "other"


Item = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[Reasoning, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]


class FunctionTool(_Open):
    type: str
    name: str | None = None


class ResponsesCreateParams(_Open):
    """A Responses request as an agent runs it: the parts the agent reads are checked here."""

    input: str | list[Item]
    tools: list[FunctionTool] | None = None


class TaskRow(_Open):
    """One task of an input file, as /run and /seed_session receive it."""

    responses_create_params: ResponsesCreateParams


class OutputMessage(_Open):
    type: Literal["message"]
    role: str = "assistant"
    content: list[ContentPart]


OutputItem = Annotated[
    Annotated[OutputMessage, Tag("message")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[Reasoning, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]


class ResponseBody(_Open):
    """A finished Response (the agent's answer): its output items in order."""

    output: list[OutputItem]


class VerifyRequest(TaskRow):
    """The task row plus the finished `response`; a resources server may subclass it to name its own fields."""

    response: ResponseBody


class SeedSessionRequest(_Open):
    """The task row as /seed_session receives it; a resources server may subclass it to require its fields."""
