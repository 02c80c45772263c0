"""vLLM's token endpoints (`--enable-scale-out`): render, generate from token IDs, derender.

The generate request is the render's answer with the spliced prompt in it and `max_tokens` worked out again for
that prompt; the generate and derender answers are read back into the shape of an ordinary vLLM chat completion
with token data, so the answer side of the conversion treats both paths alike. Pure functions; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ngym.protocol.shapes import JSON
from ngym.protocol.tokens import TOKEN_ID_PREFIX, TokenDataError

RENDER_PATH = "/v1/chat/completions/render"
GENERATE_PATH = "/inference/v1/generate"
DERENDER_PATH = "/v1/chat/completions/derender"
# Derender reads only the prompt's last few IDs (to detokenize the first output token in context).
DERENDER_PROMPT_TAIL = 16


@dataclass(frozen=True, slots=True)
class Generation:
    token_ids: list[int]
    log_probs: list[float]


def caller_max_tokens(payload: JSON) -> int | None:
    value = payload.get("max_completion_tokens")
    if value is None:
        value = payload.get("max_tokens")
    return value if isinstance(value, int) else None


def generate_request(rendered: JSON, prompt: list[int], max_model_len: int, max_tokens: int | None) -> JSON | None:
    """The render's GenerateRequest with `prompt` as its token IDs and `max_tokens` worked out again for it, as
    vLLM does for a chat request: the caller's cap (or the model's default) within the room left in the context.
    None when the prompt leaves no room to generate: a context overflow."""
    room = max_model_len - len(prompt)
    if room <= 0:
        return None
    params = dict(rendered.get("sampling_params") or {})
    cap = max_tokens
    rendered_max = params.get("max_tokens")
    rendered_room = max_model_len - len(rendered.get("token_ids") or ())
    if cap is None and isinstance(rendered_max, int) and rendered_max < rendered_room:
        cap = rendered_max  # a default from the model's generation config, not the room in the context
    params["max_tokens"] = room if cap is None else min(cap, room)
    return {**rendered, "token_ids": prompt, "sampling_params": params}


def read_generation(answer: JSON) -> Generation:
    """The generated IDs and their log-probabilities from a generate answer, checked against each other."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TokenDataError("vLLM's generate answer has no choices")
    choice = choices[0]
    token_ids = choice.get("token_ids")
    if not isinstance(token_ids, list):
        raise TokenDataError("vLLM's generate answer has no token_ids")
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        if not token_ids:
            return Generation([], [])
        raise TokenDataError("vLLM's generate answer has no logprobs.content; the request must ask for logprobs")
    if len(content) != len(token_ids):
        raise TokenDataError(f"vLLM generated {len(token_ids)} token_ids but {len(content)} logprobs")
    log_probs: list[float] = []
    for position, (token_id, entry) in enumerate(zip(token_ids, content, strict=True)):
        logprob = entry.get("logprob") if isinstance(entry, dict) else None
        if not isinstance(logprob, int | float):
            raise TokenDataError(f"logprobs.content[{position}].logprob is missing")
        if entry.get("token_id", token_id) != token_id:
            raise TokenDataError(
                f"token_ids[{position}] is {token_id} but logprobs.content[{position}].token_id is {entry['token_id']}"
            )
        log_probs.append(float(logprob))
    return Generation(token_ids, log_probs)


def shown_token_count(generated: JSON) -> int:
    """How many generated tokens vLLM's chat completions shows as text: all but the token that stopped the
    generation when that was end-of-sequence or a stop token ID."""
    choice = generated["choices"][0]
    count = len(choice.get("token_ids") or [])
    stop_reason = choice.get("stop_reason")
    if count and choice.get("finish_reason") == "stop" and (stop_reason is None or isinstance(stop_reason, int)):
        return count - 1
    return count


def derender_request(
    model: str, generated: JSON, chat_request: JSON, prompt: list[int], shown: int, with_log_probs: bool = False
) -> JSON | None:
    """The derender body for the first `shown` generated tokens, with the chat request whose tools and settings
    the parsers need (without its messages, which parsing does not read); None when there is nothing to read.
    The log-probs (already read from the generate answer) go along only when asked for: they carry each token's
    text, which cutting at a stop string needs."""
    if shown <= 0:
        return None
    choice = generated["choices"][0]
    if with_log_probs:
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            logprobs = {**logprobs, "content": logprobs["content"][:shown]}
    else:
        logprobs = None
    choice = {**choice, "token_ids": choice["token_ids"][:shown], "logprobs": logprobs}
    return {
        "model": model,
        "generate_response": {**generated, "choices": [choice]},
        "chat_request": {**chat_request, "messages": []},
        "prompt_token_ids": prompt[-DERENDER_PROMPT_TAIL:],
        "prompt_tokens": len(prompt),
    }


def stop_string_cut(derendered: JSON, stop: str) -> tuple[int, str] | None:
    """Where vLLM cut the text of a generation that hit the stop string `stop` (derender decodes every token):
    (tokens wholly before it, the text of the next token up to it). None when the tokens' text is not known."""
    choice = derendered["choices"][0]
    logprobs = choice.get("logprobs")
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("bytes"), list) for e in entries
    ):
        return None
    pieces = [bytes(entry["bytes"]) for entry in entries]
    at = b"".join(pieces).find(stop.encode())
    if at < 0:
        return None
    start = 0
    for index, piece in enumerate(pieces):
        if start + len(piece) > at:
            return index, b"".join(pieces)[start:at].decode(errors="ignore")
        start += len(piece)
    return None


def empty_derendered(generated: JSON, model: str) -> JSON:
    """What derender would say of a generation that produced no text (it refuses empty token lists)."""
    choice = generated["choices"][0]
    message: JSON = {"role": "assistant", "content": "", "reasoning": None, "tool_calls": []}
    finish = {"index": 0, "message": message, "finish_reason": choice.get("finish_reason"), "stop_reason": None}
    return {"id": generated.get("request_id"), "object": "chat.completion", "model": model, "choices": [finish]}


def chat_completion(derendered: JSON, prompt: list[int], generation: Generation) -> JSON:
    """The derendered answer as vLLM's chat completions would have answered with token IDs on: top-level
    `prompt_token_ids`, the choice's `token_ids`, log-probs with `token_id:N` tokens."""
    choices = derendered.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TokenDataError("vLLM's derender answer has no choices")
    choice = dict(choices[0])
    message = choice.get("message")
    if choice.get("finish_reason") == "stop" and isinstance(message, dict) and message.get("tool_calls"):
        choice["finish_reason"] = "tool_calls"  # as vLLM's chat completions reports a parsed tool call
    choice["token_ids"] = generation.token_ids
    choice["logprobs"] = {
        "content": [
            {"token": f"{TOKEN_ID_PREFIX}{token_id}", "logprob": logprob, "bytes": None, "top_logprobs": []}
            for token_id, logprob in zip(generation.token_ids, generation.log_probs, strict=True)
        ]
    }
    completion = len(generation.token_ids)
    usage = {"prompt_tokens": len(prompt), "completion_tokens": completion, "total_tokens": len(prompt) + completion}
    return {**derendered, "choices": [choice], "prompt_token_ids": prompt, "usage": usage}
