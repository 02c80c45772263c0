"""What a recording case is (`Case`: a request to real vLLM and where its answer goes), and what the cases share:
the seed, the tools, forced outputs, the recordings folder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.forcing import literal_regex
from testkit.tiny_model import SERVED_MODEL_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORDINGS_DIR = REPO_ROOT / "tests" / "data" / "vllm_recordings"
DEFAULT_MODEL_DIR = REPO_ROOT / ".cache" / "tiny-model"
SCALE_OUT_ARGS: tuple[str, ...] = ("--enable-scale-out",)
TRUST_TEMPLATE_ARGS: tuple[str, ...] = ("--trust-request-chat-template",)
API_KEY = "test-key"
WRONG_API_KEY = "wrong-key"
RECORDED_HEADERS = ("content-type", "www-authenticate")
FIXED_CREATED = 1700000000
SEED = 1234

TOOL_CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call>'
WEATHER_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            },
        },
    }
]
TOKEN_INFO = {"logprobs": True, "top_logprobs": 0, "return_token_ids": True, "return_tokens_as_token_ids": True}
HELLO_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello!"},
]
WEATHER_MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "What is the weather in SF?"}]
HISTORY_WITH_EXTRA_FIELDS: list[dict[str, Any]] = [
    {"role": "user", "content": "Hello!"},
    {
        "role": "assistant",
        "content": "Hi! How can I help you?",
        "prompt_token_ids": [1, 2, 3],
        "generation_token_ids": [4, 5],
        "generation_log_probs": [-0.5, -0.25],
        "reasoning_content": "The user greets me (reasoning_content).",
        "reasoning": "The user greets me (reasoning).",
    },
    {"role": "user", "content": "What is the weather in SF?"},
]
TOOL_RESULT_HISTORY: list[dict[str, Any]] = [
    *WEATHER_MESSAGES,
    {
        "role": "assistant",
        "content": None,
        "reasoning": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "SF"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"city": "SF", "weather_description": "sunny"}'},
]


def forced(text: str) -> dict[str, Any]:
    return {"structured_outputs": {"regex": literal_regex(text)}}


def chat(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": SERVED_MODEL_NAME, "messages": messages, "seed": SEED, **fields}


# Answers of the cases recorded so far in this run, by case name, as vLLM sent them (not normalised).
Answers = Mapping[str, Any]


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    method: str
    path: str
    body: Any = None  # or a function of the earlier answers, for a request built from them (see `needs`)
    headers: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # cases whose answers `body` reads: recorded first

    def request_body(self, answers: Answers) -> Any:
        return self.body(answers) if callable(self.body) else self.body
