"""Recording cases for vLLM's text-completions, Responses and (de)tokenize routes, which the model server's
completions mode, Responses pass-through and `/loglikelihood` route use (recorded by ``testkit.recordings.record``).

The main server (parsers, scale-out, request chat templates trusted) records most; the ``--api-key`` server
(no request chat templates) records the refusal of a chat template sent with a request.
"""

from __future__ import annotations

from typing import Any

from testkit.forcing import literal_regex
from testkit.recordings.case import SEED, WEATHER_TOOLS, Case
from testkit.tiny_model import SERVED_MODEL_NAME

COMPLETIONS_PATH = "/v1/completions"
RESPONSES_PATH = "/v1/responses"
TOKEN_FLAGS = {"logprobs": 0, "return_token_ids": True, "return_tokens_as_token_ids": True}
PROMPT = "Q: What is 2+2?\nA:"
# A template sent with a request: the tiny model's ChatML without tools or reasoning.
REQUEST_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
RESPONSES_TOOLS: list[dict[str, Any]] = [{"type": "function", **tool["function"]} for tool in WEATHER_TOOLS]


def forced(text: str) -> dict[str, Any]:
    return {"structured_outputs": {"regex": literal_regex(text)}}


def completion(prompt: Any, **fields: Any) -> dict[str, Any]:
    return {"model": SERVED_MODEL_NAME, "prompt": prompt, "seed": SEED, **fields}


def completions_cases() -> list[Case]:
    return [
        Case(
            "completions_text",
            "/v1/completions with a text prompt, forced text: choices[0].text, finish_reason stop, no token data.",
            "POST",
            COMPLETIONS_PATH,
            completion(PROMPT, max_tokens=20, **forced(" 4")),
        ),
        Case(
            "completions_token_ids",
            "logprobs 0 + return_token_ids + return_tokens_as_token_ids: choice.prompt_token_ids, choice.token_ids, "
            "logprobs.tokens read 'token_id:N' with token_logprobs beside them (the end-of-text id included).",
            "POST",
            COMPLETIONS_PATH,
            completion(PROMPT, max_tokens=20, **TOKEN_FLAGS, **forced(" 4")),
        ),
        Case(
            "completions_token_ids_prompt",
            "A prompt given as token IDs, with token data: prompt_token_ids echo the IDs sent.",
            "POST",
            COMPLETIONS_PATH,
            completion([1, 486, 201, 599, 2, 201, 1, 425, 85, 621, 201], max_tokens=20, **TOKEN_FLAGS, **forced("Hi")),
        ),
        Case(
            "completions_logprobs_token_strings",
            "logprobs 0 without return_tokens_as_token_ids or return_token_ids: tokens are strings, no IDs.",
            "POST",
            COMPLETIONS_PATH,
            completion(PROMPT, max_tokens=20, logprobs=0, **forced(" 4")),
        ),
        Case(
            "completions_stop_string",
            "A stop string hit: the text ends before it, finish_reason stop, stop_reason the string.",
            "POST",
            COMPLETIONS_PATH,
            completion(PROMPT, max_tokens=20, stop=["!"], **TOKEN_FLAGS, **forced(" 4! Done")),
        ),
        Case(
            "completions_max_tokens",
            "max_tokens hit: finish_reason length.",
            "POST",
            COMPLETIONS_PATH,
            completion(PROMPT, max_tokens=3, **TOKEN_FLAGS, **forced(" four plus nothing")),
        ),
        Case(
            "completions_echo_logprobs",
            "echo + logprobs 1 + max_tokens 1 at temperature 0 on token IDs (the likelihood request): "
            "token_logprobs has one entry per prompt token (the first null) plus the generated one.",
            "POST",
            COMPLETIONS_PATH,
            {
                "model": SERVED_MODEL_NAME,
                "prompt": [340, 337, 28, 223, 35],
                "temperature": 0,
                "max_tokens": 1,
                "logprobs": 1,
                "echo": True,
                "seed": 42,
            },
        ),
        Case(
            "completions_context_length_error",
            "A prompt longer than max-model-len: 400 with vLLM's 'maximum context length' body.",
            "POST",
            COMPLETIONS_PATH,
            completion("weather " * 1100, max_tokens=5),
        ),
        Case(
            "completions_max_tokens_over_max_model_len",
            "max_tokens > max-model-len: 400 naming max_tokens.",
            "POST",
            COMPLETIONS_PATH,
            completion(PROMPT, max_tokens=2000),
        ),
        Case(
            "completions_unknown_model",
            "A model name that is not served: 404.",
            "POST",
            COMPLETIONS_PATH,
            {**completion(PROMPT, max_tokens=4), "model": "no-such-model"},
        ),
        Case(
            "tokenize_prompt_without_special_tokens",
            "/tokenize of a prompt with add_special_tokens false.",
            "POST",
            "/tokenize",
            {"model": SERVED_MODEL_NAME, "prompt": "Answer: A", "add_special_tokens": False},
        ),
        Case(
            "tokenize_messages_with_request_template",
            "/tokenize of messages with a chat template sent in the request (server trusts request templates).",
            "POST",
            "/tokenize",
            {
                "model": SERVED_MODEL_NAME,
                "messages": [{"role": "user", "content": "Hello!"}],
                "add_generation_prompt": True,
                "chat_template": REQUEST_TEMPLATE,
            },
        ),
        Case(
            "detokenize",
            "/detokenize of a rendered chat prompt: special tokens are kept in the text.",
            "POST",
            "/detokenize",
            {"model": SERVED_MODEL_NAME, "tokens": [1, 486, 201, 599, 2, 201, 1, 425, 85, 621, 201]},
        ),
        Case(
            "responses_text_reply",
            "vLLM's own /v1/responses (reasoning parser on), forced '</think>' + text: one message item.",
            "POST",
            RESPONSES_PATH,
            {
                "model": SERVED_MODEL_NAME,
                "input": "Hello!",
                "max_output_tokens": 40,
                "seed": SEED,
                **forced("</think>Hello! How can I help you?"),
            },
        ),
        Case(
            "responses_tool_call",
            "vLLM's own /v1/responses with a flat function tool, forced hermes call: a function_call item.",
            "POST",
            RESPONSES_PATH,
            {
                "model": SERVED_MODEL_NAME,
                "input": [{"role": "user", "content": "What is the weather in SF?"}],
                "tools": RESPONSES_TOOLS,
                "max_output_tokens": 200,
                "seed": SEED,
                **forced('</think><tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call>'),
            },
        ),
        Case(
            "responses_context_length_error",
            "vLLM's /v1/responses with an input longer than max-model-len: 400.",
            "POST",
            RESPONSES_PATH,
            {"model": SERVED_MODEL_NAME, "input": "weather " * 1100, "max_output_tokens": 5},
        ),
        Case(
            "responses_unknown_model",
            "vLLM's /v1/responses for a model that is not served: 404.",
            "POST",
            RESPONSES_PATH,
            {"model": "no-such-model", "input": "Hello!", "max_output_tokens": 4},
        ),
    ]


def untrusted_template_cases() -> list[Case]:
    """On the --api-key server, started without --trust-request-chat-template."""
    return [
        Case(
            "tokenize_request_template_untrusted",
            "/tokenize with a chat template in the request on a server that does not trust request templates: 400.",
            "POST",
            "/tokenize",
            {
                "model": SERVED_MODEL_NAME,
                "messages": [{"role": "user", "content": "Hello!"}],
                "add_generation_prompt": True,
                "chat_template": REQUEST_TEMPLATE,
            },
        ),
    ]
