"""Record real vLLM request/response pairs into ``tests/data/vllm_recordings/`` (one JSON file per case).

    .venv/bin/python -m ngym.testing.record_vllm [--out DIR] [--model-dir DIR] [--python PATH] [--only GLOB ...]

Starts real vLLM (CPU build) on the tiny model twice: once with the tool-call and reasoning parsers,
``--enable-scale-out`` and ``--trust-request-chat-template`` (most cases, the token routes render -> generate ->
derender among them), once with ``--api-key``, no reasoning parser, no ``--enable-scale-out`` and no trusted
request templates (401, open routes, plain content, the token routes switched off, a request template refused).
The text-completions, Responses and (de)tokenize cases are in ``record_cases_completions``. ``--only`` records
just the cases whose names match (and the cases they are built from); a server none of them needs is not started.
Only volatile values (ids, timestamps) are normalised, in requests built from earlier answers too; every key,
type and nesting level is kept as vLLM sent it.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ngym.testing.tiny_model import SERVED_MODEL_NAME, ensure_tiny_model
from ngym.testing.vllm_server import (
    STRUCTURED_OUTPUTS_IN_REASONING,
    HttpResult,
    VllmServer,
    find_vllm_python,
    http_request,
    literal_regex,
)

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


def main_server_cases() -> list[Case]:
    long_prompt = "weather " * 1100
    return [
        Case("health", "GET /health: 200, empty body", "GET", "/health"),
        Case("models", "GET /v1/models", "GET", "/v1/models"),
        Case(
            "chat_plain",
            "Unconstrained reply. With the deepseek_r1 reasoning parser, output without </think> is ALL "
            "reasoning: content is null.",
            "POST",
            "/v1/chat/completions",
            chat(HELLO_MESSAGES, max_tokens=8),
        ),
        Case(
            "chat_text_reply",
            "Forced '</think>' + text: reasoning is '' and the text is the content; finish_reason stop.",
            "POST",
            "/v1/chat/completions",
            chat(HELLO_MESSAGES, max_tokens=100, **forced("</think>Hello! How can I help you?")),
        ),
        Case(
            "chat_token_ids",
            "return_token_ids + return_tokens_as_token_ids + logprobs/top_logprobs 0: top-level "
            "prompt_token_ids, per-choice token_ids, logprob tokens read 'token_id:N'.",
            "POST",
            "/v1/chat/completions",
            chat(HELLO_MESSAGES, max_tokens=100, **TOKEN_INFO, **forced("</think>Hello! How can I help you?")),
        ),
        Case(
            "chat_logprobs_token_strings",
            "logprobs without return_tokens_as_token_ids: logprob tokens are token strings.",
            "POST",
            "/v1/chat/completions",
            chat(HELLO_MESSAGES, max_tokens=100, logprobs=True, top_logprobs=0, **forced("</think>Hi there.")),
        ),
        Case(
            "chat_tool_call",
            "Forced '</think>' + hermes <tool_call>: parsed into message.tool_calls, finish_reason tool_calls.",
            "POST",
            "/v1/chat/completions",
            chat(
                WEATHER_MESSAGES,
                tools=WEATHER_TOOLS,
                max_tokens=200,
                **TOKEN_INFO,
                **forced("</think>" + TOOL_CALL_TEXT),
            ),
        ),
        Case(
            "chat_tool_call_without_think_end",
            "Forced <tool_call> without </think>: the deepseek_r1 parser takes it all as reasoning, no tool_calls.",
            "POST",
            "/v1/chat/completions",
            chat(WEATHER_MESSAGES, tools=WEATHER_TOOLS, max_tokens=200, **forced(TOOL_CALL_TEXT)),
        ),
        Case(
            "chat_reasoning",
            "Forced <think>..</think> reply: thinking in message.reasoning (no reasoning_content key).",
            "POST",
            "/v1/chat/completions",
            chat(
                WEATHER_MESSAGES,
                max_tokens=200,
                **TOKEN_INFO,
                **forced("<think>The user asks about the weather.</think>It is sunny in SF."),
            ),
        ),
        Case(
            "chat_after_tool_result",
            "Second turn after a tool message; forced text answer.",
            "POST",
            "/v1/chat/completions",
            chat(TOOL_RESULT_HISTORY, tools=WEATHER_TOOLS, max_tokens=100, **forced("</think>It is sunny in SF.")),
        ),
        Case(
            "chat_max_tokens",
            "max_tokens hit: finish_reason length, content cut short.",
            "POST",
            "/v1/chat/completions",
            chat(
                HELLO_MESSAGES,
                max_tokens=5,
                **TOKEN_INFO,
                **forced("</think>Hello! How can I help you with the weather today?"),
            ),
        ),
        Case(
            "chat_context_length_error",
            "Prompt longer than max-model-len: 400 with vLLM's 'maximum context length' body.",
            "POST",
            "/v1/chat/completions",
            chat([{"role": "user", "content": long_prompt}], max_tokens=16),
        ),
        Case(
            "chat_prompt_plus_max_tokens_over_context",
            "Prompt fits but prompt + max_tokens does not: vLLM 0.32 clamps the output (200, finish length), no 400.",
            "POST",
            "/v1/chat/completions",
            chat([{"role": "user", "content": "weather " * 1000}], max_tokens=100),
        ),
        Case(
            "chat_max_tokens_over_max_model_len",
            "max_tokens > max-model-len: 400 (a different message from the context-length one).",
            "POST",
            "/v1/chat/completions",
            chat(HELLO_MESSAGES, max_tokens=2000),
        ),
        Case(
            "chat_unknown_model",
            "A model name that is not served: 404.",
            "POST",
            "/v1/chat/completions",
            {**chat(HELLO_MESSAGES, max_tokens=4), "model": "no-such-model"},
        ),
        Case(
            "chat_bad_request",
            "A malformed request (messages not a list): vLLM's validation error body.",
            "POST",
            "/v1/chat/completions",
            {"model": SERVED_MODEL_NAME, "messages": "hello", "max_tokens": 4},
        ),
        Case(
            "chat_history_extra_fields",
            "Assistant history message with prompt_token_ids, generation_token_ids, generation_log_probs, "
            "reasoning_content and reasoning: accepted (200) and ignored, except `reasoning`.",
            "POST",
            "/v1/chat/completions",
            chat(HISTORY_WITH_EXTRA_FIELDS, max_tokens=100, return_token_ids=True, **forced("</think>Sunny.")),
        ),
        Case(
            "tokenize_history_extra_fields",
            "Same history through /tokenize with token strings: the template saw `reasoning`.",
            "POST",
            "/tokenize",
            {
                "model": SERVED_MODEL_NAME,
                "messages": HISTORY_WITH_EXTRA_FIELDS,
                "add_generation_prompt": True,
                "return_token_strs": True,
            },
        ),
        Case(
            "tokenize_history_reasoning_content_only",
            "History whose assistant message has only reasoning_content: vLLM 0.32 drops it (no <think>).",
            "POST",
            "/tokenize",
            {
                "model": SERVED_MODEL_NAME,
                "messages": [
                    {"role": "user", "content": "Hello!"},
                    {"role": "assistant", "content": "Hi!", "reasoning_content": "The user greets me."},
                    {"role": "user", "content": "Bye."},
                ],
                "add_generation_prompt": True,
                "return_token_strs": True,
            },
        ),
        Case(
            "tokenize_messages",
            "/tokenize with the chat_token_ids messages: tokens equal that reply's prompt_token_ids.",
            "POST",
            "/tokenize",
            {"model": SERVED_MODEL_NAME, "messages": HELLO_MESSAGES, "add_generation_prompt": True},
        ),
        Case(
            "tokenize_prompt",
            "/tokenize with a plain prompt.",
            "POST",
            "/tokenize",
            {"model": SERVED_MODEL_NAME, "prompt": "What is the weather in SF?"},
        ),
    ]


def api_key_server_cases() -> list[Case]:
    wrong = {"Authorization": f"Bearer {WRONG_API_KEY}"}
    right = {"Authorization": f"Bearer {API_KEY}"}
    return [
        Case(
            "unauthorized_chat",
            "Server started with --api-key, request with a wrong key: 401.",
            "POST",
            "/v1/chat/completions",
            chat(HELLO_MESSAGES, max_tokens=4),
            wrong,
        ),
        Case("unauthorized_models", "GET /v1/models with a wrong key: 401.", "GET", "/v1/models", None, wrong),
        Case(
            "unauthorized_no_key",
            "No Authorization header at all: 401.",
            "POST",
            "/v1/chat/completions",
            chat(HELLO_MESSAGES, max_tokens=4),
        ),
        Case("health_with_api_key_server", "/health is not guarded by --api-key.", "GET", "/health", None, wrong),
        Case(
            "tokenize_with_api_key_server",
            "/tokenize (no /v1 prefix) is not guarded by --api-key either.",
            "POST",
            "/tokenize",
            {"model": SERVED_MODEL_NAME, "prompt": "Hello!"},
            wrong,
        ),
        Case(
            "chat_text_reply_no_reasoning_parser",
            "No reasoning parser: unconstrained text is the content, and `reasoning` is null.",
            "POST",
            "/v1/chat/completions",
            chat(HELLO_MESSAGES, max_tokens=100, **TOKEN_INFO, **forced("Hello! How can I help you?")),
            right,
        ),
    ]


# -- token routes (--enable-scale-out) ------------------------------------------------------------------------
RENDER_PATH = "/v1/chat/completions/render"
GENERATE_PATH = "/inference/v1/generate"
DERENDER_PATH = "/v1/chat/completions/derender"
TOKEN_LOGPROBS = {"logprobs": True, "top_logprobs": 0}


def token_chat(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    # No per-request seed: the generate step would sample with it at temperature 1, which crashes the CPU engine.
    return {"model": SERVED_MODEL_NAME, "messages": messages, **fields}


def without_eos(generated: dict[str, Any]) -> dict[str, Any]:
    """A generate answer without its last token (the end-of-sequence id) and that token's log-prob."""
    choice = dict(generated["choices"][0])
    choice["token_ids"] = choice["token_ids"][:-1]
    if choice.get("logprobs"):
        choice["logprobs"] = {"content": choice["logprobs"]["content"][:-1]}
    return {**generated, "choices": [choice]}


def token_chain(name: str, what: str, request: dict[str, Any], *, drop_eos_too: bool = False) -> list[Case]:
    """render -> generate -> derender of one chat request; each step's request is built from the answer before."""
    render, generate = f"render_{name}", f"generate_{name}"

    def derender_body(strip: bool) -> Callable[[Answers], Any]:
        def body(answers: Answers) -> Any:
            generated = answers[generate]
            return {
                "model": SERVED_MODEL_NAME,
                "generate_response": without_eos(generated) if strip else generated,
                "chat_request": request,
                "prompt_token_ids": answers[render]["token_ids"],
                "prompt_tokens": len(answers[render]["token_ids"]),
            }

        return body

    cases = [
        Case(
            render,
            f"Render {what}: the GenerateRequest (token_ids, resolved sampling_params).",
            "POST",
            RENDER_PATH,
            request,
        ),
        Case(
            generate,
            f"Generate from the render of {what}, sent back unchanged.",
            "POST",
            GENERATE_PATH,
            lambda answers: answers[render],
            needs=(render,),
        ),
        Case(
            f"derender_{name}",
            f"Derender the generation of {what}, with the chat request and prompt IDs.",
            "POST",
            DERENDER_PATH,
            derender_body(False),
            needs=(render, generate),
        ),
    ]
    if drop_eos_too:
        cases.append(
            Case(
                f"derender_{name}_without_eos",
                f"Derender {what} without the final <|im_end|> id (and log-prob): "
                "the content no longer ends with '<|im_end|>'.",
                "POST",
                DERENDER_PATH,
                derender_body(True),
                needs=(render, generate),
            )
        )
    return cases


def generate_from_render(render: str, drop: tuple[str, ...] = (), **changes: Any) -> Callable[[Answers], Any]:
    """A generate request: the answer of ``render`` with keys dropped or changed."""

    def body(answers: Answers) -> Any:
        return {k: v for k, v in {**answers[render], **changes}.items() if k not in drop}

    return body


def token_cases() -> list[Case]:
    text = "</think>Hello! How can I help you?"
    plain = "render_text_reply"
    return [
        *token_chain(
            "text_reply",
            "a forced text reply (logprobs, top_logprobs 0): generate ends with the <|im_end|> id, finish stop; "
            "derender keeps special tokens, so the content ends with '<|im_end|>'",
            token_chat(HELLO_MESSAGES, max_tokens=100, **TOKEN_LOGPROBS, **forced(text)),
            drop_eos_too=True,
        ),
        *token_chain(
            "tool_call",
            "a forced hermes tool call with tools: render sets skip_special_tokens false; derender parses "
            "tool_calls (bare 16-hex ids), content null, finish_reason stays 'stop'",
            token_chat(
                WEATHER_MESSAGES,
                tools=WEATHER_TOOLS,
                max_tokens=200,
                **TOKEN_LOGPROBS,
                **forced("</think>" + TOOL_CALL_TEXT),
            ),
        ),
        *token_chain(
            "reasoning",
            "a forced <think>..</think> reply without logprobs: generate's logprobs null; derender splits "
            "reasoning from content",
            token_chat(
                WEATHER_MESSAGES,
                max_tokens=200,
                **forced("<think>The user asks about the weather.</think>It is sunny in SF."),
            ),
        ),
        *token_chain(
            "max_tokens",
            "a reply cut by max_tokens 5: finish_reason length, no <|im_end|>",
            token_chat(
                HELLO_MESSAGES,
                max_tokens=5,
                **TOKEN_LOGPROBS,
                **forced("</think>Hello! How can I help you with the weather today?"),
            ),
        ),
        Case(
            "render_after_tool_result",
            "Render of a history with an assistant tool call and a tool result (tools listed).",
            "POST",
            RENDER_PATH,
            token_chat(TOOL_RESULT_HISTORY, tools=WEATHER_TOOLS, max_tokens=100),
        ),
        Case(
            "render_history_with_reasoning",
            "History whose assistant turn has `reasoning`: the prompt's last think marker is </think>, so "
            "reasoning_ended is true.",
            "POST",
            RENDER_PATH,
            token_chat(HISTORY_WITH_EXTRA_FIELDS, max_tokens=50),
        ),
        Case(
            "render_greedy_clamped",
            "temperature 0 (top_p/min_p left out) and a prompt that leaves less room than max_tokens: "
            "sampling_params.max_tokens = max_model_len - prompt length.",
            "POST",
            RENDER_PATH,
            token_chat([{"role": "user", "content": "weather " * 1000}], max_tokens=100, temperature=0),
        ),
        Case(
            "render_no_max_tokens",
            "No max_tokens: sampling_params.max_tokens is the room left in the context.",
            "POST",
            RENDER_PATH,
            token_chat(HELLO_MESSAGES),
        ),
        Case(
            "render_unknown_model",
            "Render for a model that is not served: 404.",
            "POST",
            RENDER_PATH,
            {**token_chat(HELLO_MESSAGES, max_tokens=4), "model": "no-such-model"},
        ),
        Case(
            "render_context_length_error",
            "Render of a prompt longer than max-model-len: the chat route's 400.",
            "POST",
            RENDER_PATH,
            token_chat([{"role": "user", "content": "weather " * 1100}], max_tokens=16),
        ),
        Case(
            "render_max_tokens_over_max_model_len",
            "Render with max_tokens > max-model-len: the chat route's 400.",
            "POST",
            RENDER_PATH,
            token_chat(HELLO_MESSAGES, max_tokens=2000),
        ),
        Case(
            "generate_unknown_model",
            "Generate for a model that is not served: 404.",
            "POST",
            GENERATE_PATH,
            generate_from_render(plain, model="no-such-model"),
            needs=(plain,),
        ),
        Case(
            "generate_missing_token_ids",
            "Generate without token_ids: pydantic's validation error as vLLM's 400.",
            "POST",
            GENERATE_PATH,
            generate_from_render(plain, drop=("token_ids",)),
            needs=(plain,),
        ),
        Case(
            "generate_empty_token_ids",
            "Generate with token_ids []: 400 (min_length 1).",
            "POST",
            GENERATE_PATH,
            generate_from_render(plain, token_ids=[]),
            needs=(plain,),
        ),
        Case(
            "generate_prompt_too_long",
            "Generate from more token IDs than max-model-len: 400, worded unlike render's.",
            "POST",
            GENERATE_PATH,
            generate_from_render(plain, token_ids=[5] * 1100),
            needs=(plain,),
        ),
        Case(
            "generate_out_of_vocabulary",
            "Generate from a token ID outside the vocabulary: 400.",
            "POST",
            GENERATE_PATH,
            generate_from_render(plain, token_ids=[999999]),
            needs=(plain,),
        ),
        Case(
            "derender_unknown_model",
            "Derender for a model that is not served: 404.",
            "POST",
            DERENDER_PATH,
            lambda a: {
                "model": "no-such-model",
                "generate_response": a["generate_text_reply"],
                "chat_request": token_chat(HELLO_MESSAGES),
            },
            needs=("generate_text_reply",),
        ),
        Case(
            "derender_without_chat_request",
            "Derender without chat_request on a server with parsers: 400.",
            "POST",
            DERENDER_PATH,
            lambda a: {"model": SERVED_MODEL_NAME, "generate_response": a["generate_text_reply"]},
            needs=("generate_text_reply",),
        ),
        Case(
            "derender_empty_token_ids",
            "Derender of a choice with no token_ids: 400.",
            "POST",
            DERENDER_PATH,
            lambda a: {
                "model": SERVED_MODEL_NAME,
                "generate_response": {
                    **a["generate_text_reply"],
                    "choices": [{**a["generate_text_reply"]["choices"][0], "token_ids": [], "logprobs": None}],
                },
                "chat_request": token_chat(HELLO_MESSAGES),
            },
            needs=("generate_text_reply",),
        ),
        Case(
            "derender_missing_generate_response",
            "Derender without generate_response: the validation error names both union members.",
            "POST",
            DERENDER_PATH,
            {"model": SERVED_MODEL_NAME, "chat_request": token_chat(HELLO_MESSAGES)},
        ),
    ]


def no_scale_out_cases() -> list[Case]:
    """On the --api-key server, started without --enable-scale-out."""
    right = {"Authorization": f"Bearer {API_KEY}"}
    return [
        Case(
            "render_without_scale_out",
            "Render on a server without --enable-scale-out: the route exists and refuses.",
            "POST",
            RENDER_PATH,
            token_chat(HELLO_MESSAGES, max_tokens=4),
            right,
        ),
        Case(
            "generate_without_scale_out",
            "Generate on a server without --enable-scale-out.",
            "POST",
            GENERATE_PATH,
            {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 4}},
            right,
        ),
        Case(
            "unauthorized_generate",
            "/inference/v1/generate with a wrong key: 401 (--api-key guards /inference).",
            "POST",
            GENERATE_PATH,
            {"token_ids": [1, 2, 3], "sampling_params": {"max_tokens": 4}},
            {"Authorization": f"Bearer {WRONG_API_KEY}"},
        ),
    ]


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """The cases matching any glob in ``patterns`` (all when None) and those they need, in recording order."""
    if patterns is None:
        return cases
    by_name = {case.name: case for case in cases}
    wanted: set[str] = set()
    todo = [c.name for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].needs)
    return [case for case in cases if case.name in wanted]


# -- reading recordings --------------------------------------------------------------------------------------
def load_recording(name: str, directory: Path = RECORDINGS_DIR) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((directory / f"{name}.json").read_text())
    return record


def shape_mismatches(recorded: Any, actual: Any, path: str = "$") -> list[str]:
    """Where ``actual`` differs from ``recorded`` in keys (and their order), JSON types, nulls or nesting.

    Arrays may differ in length (but not in being empty); every actual element must have the shape of the
    first recorded element.
    """
    if isinstance(recorded, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected object, got {type(actual).__name__}"]
        if list(recorded) != list(actual):
            return [f"{path}: keys {list(actual)} != recorded {list(recorded)}"]
        return [m for key in recorded for m in shape_mismatches(recorded[key], actual[key], f"{path}.{key}")]
    if isinstance(recorded, list):
        if not isinstance(actual, list):
            return [f"{path}: expected array, got {type(actual).__name__}"]
        if not recorded or not actual:
            return [] if not recorded and not actual else [f"{path}: emptiness differs from the recording"]
        return [m for i, item in enumerate(actual) for m in shape_mismatches(recorded[0], item, f"{path}[{i}]")]
    if type(recorded) is not type(actual):
        return [f"{path}: {type(actual).__name__} ({actual!r}) != recorded {type(recorded).__name__} ({recorded!r})"]
    return []


# -- normalisation -------------------------------------------------------------------------------------------
_VOLATILE_ID = re.compile(
    r"^((?:generate-tokens-)?(?:chatcmpl-tool-|chatcmpl-|modelperm-|cmpl-|resp_|rs_|msg_|fc_|call_))([0-9a-f]+)$"
    r"|^(generate-tokens-|)([0-9a-f]{16})$"  # vLLM's random_uuid(): derender's tool-call ids, request ids
)
_ID_KEYS = ("id", "request_id", "call_id")
_FINGERPRINT = re.compile(r"^(vllm-[0-9.]+-)([0-9a-f]+)$")


def _normalise(value: Any, model_dir: str, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, model_dir, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, model_dir) for v in value]
    if key in ("created", "created_at") and isinstance(value, int):
        return FIXED_CREATED
    if isinstance(value, str):
        if key in _ID_KEYS and (m := _VOLATILE_ID.match(value)):
            prefix, digits = (m.group(1), m.group(2)) if m.group(2) else (m.group(3), m.group(4))
            return prefix + "0" * len(digits)
        if key == "system_fingerprint" and (m := _FINGERPRINT.match(value)):
            return m.group(1) + "0" * len(m.group(2))
        return value.replace(model_dir, "<model_dir>")
    return value


def _body_record(result: HttpResult, model_dir: Path) -> dict[str, Any]:
    if "json" in result.headers.get("content-type", ""):
        return {"body": _normalise(json.loads(result.body), str(model_dir))}
    return {"body_text": result.body.decode(errors="replace")}


def record_case(
    server: VllmServer, case: Case, server_label: str, model_dir: Path, answers: Answers | None = None
) -> tuple[dict[str, Any], HttpResult]:
    body = case.request_body(answers or {})
    result = http_request(
        f"{server.root_url}{case.path}", method=case.method, body=body, headers=case.headers, timeout=300
    )
    argv = [a.replace(str(model_dir), "<model_dir>") for a in server.command()[3:]]
    argv = ["<port>" if a == str(server.port) else a for a in argv]
    record = {
        "name": case.name,
        "description": case.description,
        "vllm_version": server.request("GET", "/version").json()["version"],
        "server": {"label": server_label, "args": argv},
        "request": {
            "method": case.method,
            "path": case.path,
            "headers": case.headers,
            "body": _normalise(body, str(model_dir)),
        },
        "response": {
            "status": result.status,
            "headers": {h: result.headers[h] for h in RECORDED_HEADERS if h in result.headers},
            **_body_record(result, model_dir),
        },
    }
    return record, result


def record_all(
    server: VllmServer,
    cases: Iterable[Case],
    label: str,
    model_dir: Path,
    out: Path,
    log: Callable[[str], None] = print,
) -> list[str]:
    answers: dict[str, Any] = {}
    for case in cases:
        record, result = record_case(server, case, label, model_dir, answers)
        if "json" in result.headers.get("content-type", ""):
            answers[case.name] = result.json()
        path = out / f"{case.name}.json"
        path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        log(f"  {case.name}: {record['response']['status']}")
    return list(answers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RECORDINGS_DIR)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--python", type=Path, default=find_vllm_python(REPO_ROOT))
    parser.add_argument("--only", nargs="+", metavar="GLOB", help="record only the cases whose names match")
    args = parser.parse_args(argv)
    if args.python is None:
        print("no vLLM venv found (.venv-vllm/bin/python); pass --python", file=sys.stderr)
        return 2
    model_dir = ensure_tiny_model(args.model_dir, args.python)
    args.out.mkdir(parents=True, exist_ok=True)

    # Imported here: those cases are built from this module's Case.
    from ngym.testing.record_cases_completions import completions_cases, untrusted_template_cases

    main_cases = select([*main_server_cases(), *token_cases(), *completions_cases()], args.only)
    key_cases = select([*api_key_server_cases(), *no_scale_out_cases(), *untrusted_template_cases()], args.only)
    if not main_cases and not key_cases:
        print(f"no case matches {args.only}", file=sys.stderr)
        return 2

    if main_cases:
        main_server = VllmServer(
            model_dir,
            python=args.python,
            served_model_name=SERVED_MODEL_NAME,
            reasoning_parser="deepseek_r1",
            extra_args=STRUCTURED_OUTPUTS_IN_REASONING + SCALE_OUT_ARGS + TRUST_TEMPLATE_ARGS,
        )
        with main_server.start():
            print(f"vLLM (parsers, scale-out) ready in {main_server.ready_seconds:.1f}s")
            record_all(main_server, main_cases, "parsers", model_dir, args.out)

    if key_cases:
        key_server = VllmServer(model_dir, python=args.python, served_model_name=SERVED_MODEL_NAME, api_key=API_KEY)
        with key_server.start():
            print(f"vLLM (--api-key) ready in {key_server.ready_seconds:.1f}s")
            record_all(key_server, key_cases, "api_key", model_dir, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
