"""The Responses and Chat Completions types NeMo Gym's environments validate requests and responses with.

Items are told apart by their `type` (a message without one by its role and content); an item of a type not
modelled here is kept as it came (every field), so a recorded rollout always validates and dumps back unchanged.
NeMoGymResponse is the OpenAI SDK's Response with these items, so `output_text` and the SDK's fields work.
NeMoGymAsyncOpenAI, the client for an OpenAI-compatible endpoint, lives in `_openai_client` and is named here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.responses import Response
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from ._openai_client import RATE_LIMIT_ERROR_CODES as RATE_LIMIT_ERROR_CODES
from ._openai_client import RETRY_ERROR_CODES as RETRY_ERROR_CODES
from ._openai_client import NeMoGymAsyncOpenAI as NeMoGymAsyncOpenAI
from ._usage import NeMoGymResponseInputTokensDetails as NeMoGymResponseInputTokensDetails
from ._usage import NeMoGymResponseOutputTokensDetails as NeMoGymResponseOutputTokensDetails
from ._usage import NeMoGymResponseUsage as NeMoGymResponseUsage
from ._usage import accumulate_response_usage as accumulate_response_usage

Status = Literal["in_progress", "completed", "incomplete"]


class _Item(BaseModel):
    model_config = ConfigDict(extra="allow")


class NeMoGymResponseOutputText(_Item):
    text: str
    type: Literal["output_text"] = "output_text"
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] | None = None


class NeMoGymResponseOutputRefusal(_Item):
    refusal: str
    type: Literal["refusal"] = "refusal"


def _content_part_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("output_text", "refusal") else "other"


NeMoGymResponseOutputContent = Annotated[
    Annotated[NeMoGymResponseOutputText, Tag("output_text")]
    | Annotated[NeMoGymResponseOutputRefusal, Tag("refusal")]
    | Annotated[dict[str, Any], Tag("other")],
    Discriminator(_content_part_tag),
]


class NeMoGymResponseOutputMessage(_Item):
    id: str
    content: list[NeMoGymResponseOutputContent]
    role: Literal["assistant"] = "assistant"
    status: Status = "completed"
    type: Literal["message"] = "message"
    phase: Literal["commentary", "final_answer"] | None = None


class NeMoGymEasyInputMessage(_Item):
    content: str | list[dict[str, Any]]
    role: Literal["user", "assistant", "system", "developer"]
    type: Literal["message"] = "message"
    phase: Literal["commentary", "final_answer"] | None = None


class NeMoGymMessage(_Item):
    content: list[dict[str, Any]]
    role: Literal["user", "system", "developer"]
    status: Status = "completed"
    type: Literal["message"] = "message"


class NeMoGymFunctionCallOutput(_Item):
    call_id: str
    output: str | list[dict[str, Any]]
    type: Literal["function_call_output"] = "function_call_output"
    id: str | None = None
    status: Status | None = None


NeMoGymResponseFunctionCallOutput = NeMoGymFunctionCallOutput


class NeMoGymResponseFunctionToolCall(_Item):
    arguments: str
    call_id: str
    name: str
    type: Literal["function_call"] = "function_call"
    id: str | None = None
    status: Status | None = None
    namespace: str | None = None


class TokenIDLogProbMixin(BaseModel):
    """The token ids and log-probabilities a model server returns for training."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]
    routed_experts: Any = None


class NeMoGymResponseOutputMessageForTraining(NeMoGymResponseOutputMessage, TokenIDLogProbMixin):
    pass


class NeMoGymResponseFunctionToolCallForTraining(NeMoGymResponseFunctionToolCall, TokenIDLogProbMixin):
    pass


class NeMoGymSummary(_Item):
    text: str
    type: Literal["summary_text"] = "summary_text"


class NeMoGymResponseReasoningItem(_Item):
    id: str
    summary: list[NeMoGymSummary] = Field(default_factory=list)
    type: Literal["reasoning"] = "reasoning"
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    status: Status | None = None


class NeMoGymOtherItem(_Item):
    """An item of a type not modelled here, with every field it came with."""

    type: str | None = None


def _item_tag(value: Any) -> str:
    if not isinstance(value, dict):
        return _OBJECT_TAGS.get(type(value), "other")
    kind = value.get("type")
    if kind in ("function_call", "function_call_output", "reasoning"):
        return str(kind)
    if kind in (None, "message") and "role" in value:
        content = value.get("content")
        typed_output = isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") in ("output_text", "refusal") for part in content
        )
        if value["role"] == "assistant" and typed_output and "id" in value:
            return "output_message"
        return "easy_message"
    return "other"


NeMoGymResponseInputItem = Annotated[
    Annotated[NeMoGymEasyInputMessage, Tag("easy_message")]
    | Annotated[NeMoGymResponseOutputMessage, Tag("output_message")]
    | Annotated[NeMoGymResponseFunctionToolCall, Tag("function_call")]
    | Annotated[NeMoGymFunctionCallOutput, Tag("function_call_output")]
    | Annotated[NeMoGymResponseReasoningItem, Tag("reasoning")]
    | Annotated[NeMoGymOtherItem, Tag("other")],
    Discriminator(_item_tag),
]
NeMoGymResponseInput = list[NeMoGymResponseInputItem]


def _output_tag(value: Any) -> str:
    tag = _item_tag(value)
    return "output_message" if tag == "easy_message" else tag


NeMoGymResponseOutputItem = Annotated[
    Annotated[NeMoGymResponseOutputMessage, Tag("output_message")]
    | Annotated[NeMoGymResponseFunctionToolCall, Tag("function_call")]
    | Annotated[NeMoGymFunctionCallOutput, Tag("function_call_output")]
    | Annotated[NeMoGymResponseReasoningItem, Tag("reasoning")]
    | Annotated[NeMoGymOtherItem, Tag("other")],
    Discriminator(_output_tag),
]

_OBJECT_TAGS: dict[type, str] = {
    NeMoGymEasyInputMessage: "easy_message",
    NeMoGymMessage: "easy_message",
    NeMoGymResponseOutputMessage: "output_message",
    NeMoGymResponseFunctionToolCall: "function_call",
    NeMoGymFunctionCallOutput: "function_call_output",
    NeMoGymResponseReasoningItem: "reasoning",
    NeMoGymOtherItem: "other",
}


class NeMoGymResponseCreateParamsNonStreaming(BaseModel):
    """A Responses API request as the agent sends it to the model (every field of the SDK's request kept)."""

    model_config = ConfigDict(extra="allow")

    background: bool | None = None
    include: list[str] | None = None
    input: str | NeMoGymResponseInput
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, Any] | None = None
    model: str | None = None
    parallel_tool_calls: bool | None = True  # None in rollouts recorded by earlier NeMo Gym releases
    previous_response_id: str | None = None
    prompt: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    store: bool | None = None
    temperature: float | None = None
    text: dict[str, Any] | None = None
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] | None = Field(default_factory=list)
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    stream: Literal[False] | None = None


class NeMoGymResponse(Response):
    output: list[NeMoGymResponseOutputItem]  # type: ignore[assignment]
    # NeMo Gym's usage (unknown counts None), or the Chat Completions shape (prompt_tokens, ...) some recorded
    # rollouts carry.
    usage: NeMoGymResponseUsage | dict[str, Any] | None = None  # type: ignore[assignment]


class NeMoGymChatCompletionMessage(ChatCompletionMessage):
    model_config = ConfigDict(extra="allow")


class NeMoGymChoice(Choice):
    message: NeMoGymChatCompletionMessage


class NeMoGymChatCompletion(ChatCompletion):
    choices: list[NeMoGymChoice]  # type: ignore[assignment]


class NeMoGymChatCompletionCreateParamsNonStreaming(BaseModel):
    """A Chat Completions request (messages as plain dicts, every other field kept)."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]]
    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    stream: Literal[False] | None = None
