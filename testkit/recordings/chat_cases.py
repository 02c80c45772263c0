"""Recording cases for vLLM's chat route: answers, errors and token data of the main server (parsers), and the
`--api-key` server's refusals."""

from __future__ import annotations

from testkit.recordings.case import (
    API_KEY,
    HELLO_MESSAGES,
    HISTORY_WITH_EXTRA_FIELDS,
    TOKEN_INFO,
    TOOL_CALL_TEXT,
    TOOL_RESULT_HISTORY,
    WEATHER_MESSAGES,
    WEATHER_TOOLS,
    WRONG_API_KEY,
    Case,
    chat,
    forced,
)
from testkit.tiny_model import SERVED_MODEL_NAME


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
