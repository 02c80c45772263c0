"""Recording cases for vLLM's token routes (`--enable-scale-out`: render, generate, derender) and a server
without them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testkit.recordings.case import (
    API_KEY,
    HELLO_MESSAGES,
    HISTORY_WITH_EXTRA_FIELDS,
    TOOL_CALL_TEXT,
    TOOL_RESULT_HISTORY,
    WEATHER_MESSAGES,
    WEATHER_TOOLS,
    WRONG_API_KEY,
    Answers,
    Case,
    forced,
)
from testkit.tiny_model import SERVED_MODEL_NAME

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
