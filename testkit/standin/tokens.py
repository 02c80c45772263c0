"""The stand-in's token routes, as ``vllm serve --enable-scale-out`` serves them: render, generate, derender.

Wire shapes follow vLLM 0.32 (``tests/data/vllm_recordings/{render,generate,derender}_*.json``, checked by
``tests/testkit/test_standin_token_endpoints.py``):

- ``POST /v1/chat/completions/render``: a chat request -> a GenerateRequest: the prompt's token IDs (the same fake
  tokeniser and ChatML rendering as ``/tokenize`` and the chat route) and the resolved sampling params, whose
  ``max_tokens`` is ``min(max_tokens, max_model_len - prompt length)``;
- ``POST /inference/v1/generate``: a GenerateRequest -> generated token IDs and integer log-probs. It generates the
  chat route's reply for the conversation the prompt encodes; a finished generation ends with ``<|im_end|>``;
- ``POST /v1/chat/completions/derender``: a generate answer + its chat request -> a chat.completion, parsed by the
  chat route's rules. Like vLLM with a parser configured, special tokens are kept, so a trailing ``<|im_end|>``
  lands in the content (or reasoning): a client drops the EOS id first. Tool-call ids are bare 16-hex strings and
  finish_reason is generate's (``stop``, never ``tool_calls``), as in vLLM.

Faults: ``down`` and the api key apply to all three routes; queued faults are consumed by generate (a model call)
as by the chat route. ``StandinScript.scale_out = False`` gives vLLM's 403 for a server without the flag.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testkit.standin.script import RouteHost, StandinScript, reply_text
from testkit.standin.wire import (
    EOS_ID,
    SPECIAL_TEXT,
    SPECIAL_TOKENS,
    THINK_END_ID,
    THINK_START_ID,
    _json,
    _parse_generation,
    context_length_error_body,
    fake_logprob,
    fake_token_bytes,
    fake_tokenize,
    max_tokens_error_body,
    render_chat,
    unknown_model_error_body,
    vllm_error_body,
)

RENDER_PATH = "/v1/chat/completions/render"
GENERATE_PATH = "/inference/v1/generate"
DERENDER_PATH = "/v1/chat/completions/derender"
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
IM_START_ID = 256 + SPECIAL_TOKENS.index("<|im_start|>")
SCALE_OUT_DISABLED_MESSAGE = (
    "Scale-out endpoints are disabled. Restart vllm serve with --enable-scale-out to enable them."
)
SCALE_OUT_DISABLED_BODY = {
    "error": {"message": SCALE_OUT_DISABLED_MESSAGE, "type": "PermissionDeniedError", "param": None, "code": 403}
}
# vLLM's effective template kwargs start with this default of its own; the request's follow.
_TEMPLATE_KWARGS_DEFAULTS: dict[str, Any] = {"cohere_format": "cmd4"}
_STRUCTURED_OUTPUTS_DEFAULTS: dict[str, Any] = {
    "json": None,
    "regex": None,
    "choice": None,
    "grammar": None,
    "json_object": None,
    "disable_any_whitespace": False,
    "disable_additional_properties": False,
    "whitespace_pattern": None,
    "structural_tag": None,
    "_backend": None,
    "_backend_was_auto": False,
}
_SAMPLING_EPS = 1e-5  # vLLM's greedy threshold for temperature
_OUTPUT_KIND_DELTA, _OUTPUT_KIND_FINAL_ONLY = 1, 2
_GENERATION_PROMPT = fake_tokenize("assistant\n")
_CACHE_LIMIT = 512
_SPECIAL_BYTES = {i: text.encode() for i, text in SPECIAL_TEXT.items()}


# -- vLLM's request validation errors ------------------------------------------------------------------------
def _summarize_input(value: Any) -> str:
    if isinstance(value, list | tuple | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = value if isinstance(value, str) else str(value)
    return text[:200] + "...[truncated]" if len(text) > 200 else text


def validation_error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """vLLM's 400 for a body that fails pydantic validation; ``errors`` hold type, loc (dotted), msg, input."""
    lines = []
    for err in errors[:10]:
        text = str({**err, "input": _summarize_input(err["input"])})
        lines.append(text[:1000] + "...[truncated]" if len(text) > 1000 else text)
    label = "error" if len(errors) == 1 else "errors"
    message = f"{len(errors)} validation {label}:\n" + "".join(f"  {line}\n" for line in lines)
    if len(errors) > 10:
        message += f"  ...and {len(errors) - 10} more {label}\n"
    return {"error": {"message": message.rstrip(), "type": "Bad Request", "param": errors[0]["loc"], "code": 400}}


def _missing(loc: str, body: Any) -> dict[str, Any]:
    return {"type": "missing", "loc": loc, "msg": "Field required", "input": body}


def load_body(raw: bytes) -> tuple[Any, Response | None]:
    """The JSON body, or vLLM's 400 for one that does not parse."""
    if not raw:
        return None, _json(validation_error_body([_missing("body", None)]), 400)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # the stdlib parser is FastAPI's, so its message and position are what vLLM reports
            body = json.loads(raw)
        except json.JSONDecodeError as err:
            error = {"type": "json_invalid", "loc": f"body.{err.pos}", "msg": "JSON decode error", "input": {}}
            return None, _json(validation_error_body([{**error, "ctx": {"error": err.msg}}]), 400)
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        return None, _json(
            validation_error_body([{"type": "model_attributes_type", "loc": "body", "msg": msg, "input": body}]), 400
        )
    return body, None


def _all_ints(values: list[Any]) -> bool:
    # sum() runs at C speed (this is the hot path); a float anywhere makes the total a float.
    try:
        return type(sum(values)) is int
    except TypeError:
        return False


def _generate_body_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    ids = body.get("token_ids")
    if "token_ids" not in body:
        errors.append(_missing("body.token_ids", body))
    elif not isinstance(ids, list):
        errors.append(
            {"type": "list_type", "loc": "body.token_ids", "msg": "Input should be a valid list", "input": ids}
        )
    elif not ids:
        ctx = {"field_type": "List", "min_length": 1, "actual_length": 0}
        msg = "List should have at least 1 item after validation, not 0"
        errors.append({"type": "too_short", "loc": "body.token_ids", "msg": msg, "input": ids, "ctx": ctx})
    elif not _all_ints(ids):
        msg = "Input should be a valid integer"
        for n, i in enumerate(ids):
            if type(i) is not int:
                errors.append({"type": "int_type", "loc": f"body.token_ids.{n}", "msg": msg, "input": i})
    elif min(ids) < 0:
        text = "token_ids must not contain negative values"
        error = {"type": "value_error", "loc": "body.token_ids", "msg": f"Value error, {text}", "input": ids}
        errors.append({**error, "ctx": {"error": ValueError(text)}})
    if "sampling_params" not in body:
        errors.append(_missing("body.sampling_params", body))
    elif not isinstance(body["sampling_params"], dict):
        msg = "Input should be a valid dictionary"
        errors.append(
            {"type": "dict_type", "loc": "body.sampling_params", "msg": msg, "input": body["sampling_params"]}
        )
    return errors


def _bad_request(message: str, param: str | None = None) -> Response:
    return _json(vllm_error_body(400, message, param), 400)


# -- render ----------------------------------------------------------------------------------------------------
def render_sampling_params(req: dict[str, Any], max_tokens: int, tools_parsed: bool) -> dict[str, Any]:
    """The chat request's SamplingParams as vLLM serialises them: msgspec leaves out most fields at their default."""
    temperature = float(req["temperature"]) if req.get("temperature") is not None else 1.0
    sp: dict[str, Any] = {}
    if (req.get("n") or 1) != 1:
        sp["n"] = req["n"]
    sp["presence_penalty"] = float(req.get("presence_penalty") or 0.0)
    sp["frequency_penalty"] = float(req.get("frequency_penalty") or 0.0)
    sp["repetition_penalty"] = float(req.get("repetition_penalty") or 1.0)
    sp["temperature"] = temperature
    if temperature >= _SAMPLING_EPS:  # greedy sampling resets top_p/top_k/min_p to their defaults
        sp["top_p"] = float(req["top_p"]) if req.get("top_p") is not None else 1.0
        if req.get("top_k") not in (None, 0, -1):
            sp["top_k"] = req["top_k"]
        sp["min_p"] = float(req.get("min_p") or 0.0)
    if req.get("seed") is not None:
        sp["seed"] = req["seed"]
    stop = req.get("stop")
    sp["stop"] = [stop] if isinstance(stop, str) else list(stop or [])
    sp["stop_token_ids"] = list(req.get("stop_token_ids") or [])
    if req.get("ignore_eos"):
        sp["ignore_eos"] = True
    sp["max_tokens"] = max_tokens
    if req.get("min_tokens"):
        sp["min_tokens"] = req["min_tokens"]
    if req.get("logprobs"):
        sp["logprobs"] = req.get("top_logprobs") or 0
    if tools_parsed or req.get("skip_special_tokens") is False:  # hermes keeps special tokens when tools are on
        sp["skip_special_tokens"] = False
    if req.get("spaces_between_special_tokens") is False:
        sp["spaces_between_special_tokens"] = False
    if req.get("include_stop_str_in_output"):
        sp["include_stop_str_in_output"] = True
    sp["output_kind"] = _OUTPUT_KIND_DELTA if req.get("stream") else _OUTPUT_KIND_FINAL_ONLY
    sp["skip_clone"] = True
    if isinstance(req.get("structured_outputs"), dict):
        sp["structured_outputs"] = {**_STRUCTURED_OUTPUTS_DEFAULTS, **req["structured_outputs"]}
    sp["bad_words"] = list(req.get("bad_words") or [])
    sp["skip_reading_prefix_cache"] = False
    return sp


def is_reasoning_end(ids: list[int]) -> bool:
    """deepseek_r1's check: the last think marker in the prompt is ``</think>``."""
    for i in reversed(ids):
        if i == THINK_START_ID:
            return False
        if i == THINK_END_ID:
            return True
    return False


# -- generate --------------------------------------------------------------------------------------------------
def _role_at(ids: list[int], start: int) -> str:
    end = start + 1
    while end < len(ids) and ids[end] != ord("\n") and end - start < 32:
        end += 1
    return bytes(i for i in ids[start + 1 : end] if i < 256).decode(errors="replace")


def prompt_facts(ids: list[int]) -> tuple[bool, str | None]:
    """(tools listed in the system turn, role of the last message) of a ChatML prompt from :func:`render_chat`."""
    starts: list[int] = []
    for pos in range(len(ids) - 1, -1, -1):  # from the end: only the last two turns are needed
        if ids[pos] == IM_START_ID:
            starts.append(pos)
            if len(starts) == 2:
                break
    if starts and ids[starts[0] + 1 :] == _GENERATION_PROMPT:
        starts.pop(0)
    last_role = _role_at(ids, starts[0]) if starts else None
    tools = False
    if ids and ids[0] == IM_START_ID:
        try:
            first_turn = ids[1 : ids.index(EOS_ID)]
        except ValueError:
            first_turn = ids[1:]
        try:
            text = bytes(first_turn)
        except ValueError:  # special tokens in the system text
            text = bytes(i for i in first_turn if i < 256)
        tools = text.startswith(b"system\n") and b"<tools>" in text
    return tools, last_role


def _generate_choice(index: int, ids: list[int], finished: bool, logprobs: bool) -> dict[str, Any]:
    content = None
    if logprobs:
        content = [
            {
                "token_id": i,
                "logprob": fake_logprob(i),
                "rank": 1,
                # The fake model has no alternatives to offer: its top-k list holds just the sampled token.
                "top_logprobs": [{"token_id": i, "logprob": fake_logprob(i), "rank": 1}],
            }
            for i in ids
        ]
    return {
        "index": index,
        "finish_reason": "stop" if finished else "length",
        "stop_reason": None,
        "token_ids": ids,
        "routed_experts": None,
        "sampling_mask": None,
        "weight_versions": [{"version": "default", "start": 0, "end": len(ids)}],
        "logprobs": {"content": content} if logprobs else None,
    }


def _max_tokens_too_small(max_tokens: int) -> str:
    return f"max_tokens must be at least 1, got {max_tokens}. (parameter=max_tokens, value={max_tokens})"


def _prompt_length_error(length: int, max_model_len: int) -> str:
    if length > max_model_len:
        return (
            f"The decoder prompt (length {length}) is longer than the maximum model length of {max_model_len}. "
            "Make sure that `max_model_len` is no smaller than the number of text tokens."
        )
    return (
        f"The decoder prompt (length {length}) plus the number of requested output tokens (at least 1) is longer "
        f"than the maximum model length of {max_model_len}. Make sure that `max_model_len` is no smaller than the "
        "number of text tokens (prompt + requested output tokens)."
    )


# -- derender --------------------------------------------------------------------------------------------------
def decode_keeping_specials(ids: list[int]) -> str:
    """Detokenise as vLLM's derender does with a parser: special tokens stay as text; unknown ids decode to ''."""
    out = bytearray()
    for i in ids:
        if i < 256:
            out.append(i)
        else:
            out += _SPECIAL_BYTES.get(i, b"")
    return out.decode(errors="replace")


def chat_logprobs(generate_logprobs: dict[str, Any]) -> dict[str, Any]:
    """Generate's integer-id log-probs in the chat shape (token strings and bytes), like vLLM's derender."""
    content = generate_logprobs.get("content")
    if content is None:
        return {"content": None}

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        raw = fake_token_bytes(token_id) if token_id < VOCAB_SIZE else b""
        return {"token": raw.decode(errors="replace") or "\ufffd", "logprob": logprob, "bytes": list(raw)}

    return {
        "content": [
            {
                **entry(e["token_id"], e["logprob"]),
                "top_logprobs": [entry(t["token_id"], t["logprob"]) for t in e.get("top_logprobs") or []],
            }
            for e in content
        ]
    }


def _derender_body_error(body: dict[str, Any]) -> Response | None:
    gen = body.get("generate_response")
    choices = gen.get("choices") if isinstance(gen, dict) else None
    if isinstance(choices, list) and all(isinstance(c, dict) for c in choices):
        return None
    # The body is validated against the union of the streaming and non-streaming shapes: both report.
    loc = "body.DerenderChatRequest.generate_response"
    errors = [_missing(loc, body) if gen is None else _missing(loc + ".choices", gen)]
    errors.append(_missing("body.DerenderChatStreamRequest.stream", body))
    errors.append(_missing("body.DerenderChatStreamRequest.generate_chunk", body))
    return _json(validation_error_body(errors), 400)


# -- routes ----------------------------------------------------------------------------------------------------
class TokenRoutes:
    """Render, generate and derender for the app that mounts them (its script, admission and ids)."""

    def __init__(self, app: RouteHost) -> None:
        self._app = app
        self._replies: dict[tuple[Any, ...], list[int]] = {}
        self._choices: dict[tuple[Any, ...], orjson.Fragment] = {}
        self._messages: dict[tuple[Any, ...], dict[str, Any]] = {}

    def routes(self) -> list[Route]:
        return [
            Route(RENDER_PATH, self.render, methods=["POST"]),
            Route(GENERATE_PATH, self.generate, methods=["POST"]),
            Route(DERENDER_PATH, self.derender, methods=["POST"]),
        ]

    @property
    def script(self) -> StandinScript:
        return self._app.script

    async def _admit(self, request: Request, raw: bytes, *, model_call: bool = False) -> Response | None:
        script = self.script
        fault = script.faults.popleft() if model_call and script.faults else None
        early = await self._app._admit(request, raw, fault)
        if early is not None:
            return early
        if not script.scale_out:
            return _json(SCALE_OUT_DISABLED_BODY, 403)
        return None

    def _unknown_model(self, model: Any) -> Response | None:
        script = self.script
        if model is not None and script.check_model and model != script.model:
            return _json(unknown_model_error_body(str(model), script.model), 404)
        return None

    def _request_id(self, request: Request, given: Any, prefix: str) -> str:
        header = request.headers.get("x-request-id")
        if header is not None:
            return prefix + header
        return prefix + given if isinstance(given, str) and given else self._app._next_id(prefix)

    # -- POST /v1/chat/completions/render ------------------------------------------------------------------
    async def render(self, request: Request) -> Response:
        raw = await request.body()
        early = await self._admit(request, raw)
        if early is not None:
            return early
        req, bad = load_body(raw)
        if bad is not None:
            return bad
        messages = req.get("messages")
        if not isinstance(messages, list):
            if "messages" not in req:
                return _json(validation_error_body([_missing("body.messages", req)]), 400)
            error = {"type": "list_type", "loc": "body.messages", "msg": "Input should be a valid list"}
            return _json(validation_error_body([{**error, "input": messages}]), 400)
        script = self.script
        if (unknown := self._unknown_model(req.get("model"))) is not None:
            return unknown
        requested = req.get("max_completion_tokens")
        requested = requested if requested is not None else req.get("max_tokens")
        if requested is not None and requested > script.max_model_len:
            return _json(max_tokens_error_body(requested, script.max_model_len), 400)
        tools = req.get("tools")
        add_generation_prompt = req.get("add_generation_prompt", True) is not False
        ids = fake_tokenize(render_chat(messages, tools, add_generation_prompt))
        if len(ids) > script.max_model_len:
            return _json(context_length_error_body(script.max_model_len), 400)
        budget = script.max_model_len - len(ids)
        max_tokens = budget if requested is None else min(requested, budget)
        if max_tokens < 1:
            return _bad_request(_max_tokens_too_small(max_tokens), "max_tokens")
        tools_parsed = bool(tools) and req.get("tool_choice") != "none"
        include_reasoning = req.get("include_reasoning", True) is not False
        if not script.reasoning_parser:
            reasoning_ended, parser_kwargs = None, None
        else:
            reasoning_ended = True if not include_reasoning else is_reasoning_end(ids)
            template_kwargs = {
                **_TEMPLATE_KWARGS_DEFAULTS,
                **(req.get("chat_template_kwargs") or {}),
                "add_generation_prompt": add_generation_prompt,
                "continue_final_message": req.get("continue_final_message") is True,
            }
            parser_kwargs = {"chat_template_kwargs": template_kwargs}
        stream = bool(req.get("stream"))
        body = {
            "request_id": self._request_id(request, req.get("request_id"), "chatcmpl-"),
            "token_ids": ids,
            "token_offsets": None,
            "features": None,
            "content_parts": None,
            "sampling_params": render_sampling_params(req, max_tokens, tools_parsed),
            "model": req.get("model"),
            "reasoning_ended": reasoning_ended,
            "reasoning_parser_kwargs": parser_kwargs,
            "return_token_ids": None,
            "output_mode": "tokens",
            "stream": stream,
            "stream_options": req.get("stream_options") if stream else None,
            "cache_salt": req.get("cache_salt"),
            "priority": req.get("priority") or 0,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
        }
        return _json(body)

    # -- POST /inference/v1/generate -----------------------------------------------------------------------
    async def generate(self, request: Request) -> Response:
        raw = await request.body()
        early = await self._admit(request, raw, model_call=True)
        if early is not None:
            return early
        body, bad = load_body(raw)
        if bad is not None:
            return bad
        if errors := _generate_body_errors(body):
            return _json(validation_error_body(errors), 400)
        if (unknown := self._unknown_model(body.get("model"))) is not None:
            return unknown
        if body.get("stream") or body.get("output_mode", "tokens") != "tokens":
            return _json(vllm_error_body(501, "the vLLM stand-in answers only stream=false, output_mode=tokens"), 501)
        script = self.script
        sp: dict[str, Any] = body["sampling_params"]
        n = sp.get("n") or 1
        temperature = sp.get("temperature")
        if n > 1 and temperature is not None and temperature < _SAMPLING_EPS:
            return _bad_request(f"n must be 1 when using greedy sampling, got {n}.")
        prompt: list[int] = body["token_ids"]
        if (top := max(prompt)) >= VOCAB_SIZE:
            return _bad_request(f"Token id {top} is out of vocabulary")
        if len(prompt) >= script.max_model_len:
            return _bad_request(_prompt_length_error(len(prompt), script.max_model_len))
        budget = script.max_model_len - len(prompt)
        limit = budget if sp.get("max_tokens") is None else min(sp["max_tokens"], budget)
        if limit < 1:
            return _bad_request(_max_tokens_too_small(limit), "max_tokens")

        tools, last_role = prompt_facts(prompt)
        # Render sets skip_special_tokens false exactly when the chat request's tools are parsed (tool_choice
        # not "none"): the only trace of tool_choice in a GenerateRequest.
        calling = script.tool_call_mode and tools and sp.get("skip_special_tokens") is False and last_role != "tool"
        reply = self._reply_ids(calling, last_role == "tool")
        finished = len(reply) <= limit
        ids = reply if finished else reply[:limit]
        want_logprobs = sp.get("logprobs") is not None
        choice = self._choice(ids, finished, want_logprobs)
        answer = {
            "request_id": self._request_id(request, body.get("request_id"), "generate-tokens-"),
            "model": script.model,
            "created": int(time.time()),
            "usage": {
                "prompt_tokens": len(prompt),
                "total_tokens": len(prompt) + n * len(ids),
                "completion_tokens": n * len(ids),
                "prompt_tokens_details": None,
                "completion_tokens_details": None,
            },
            "prompt_logprobs": None,
            "prompt_token_id_logprobs": None,
            "prompt_token_ids": prompt if body.get("return_token_ids") else None,
            "mm_placeholders": None,
            "metrics": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "output_mode": "tokens",
            "choices": [choice] if n == 1 else [_generate_choice(i, ids, finished, want_logprobs) for i in range(n)],
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    def _reply_ids(self, calling: bool, after_tool: bool) -> list[int]:
        script = self.script
        key = (
            script.reply_text,
            script.reasoning_text,
            script.reasoning_parser,
            script.tool_call_mode,
            script.tool_name,
            orjson.dumps(script.tool_arguments, option=orjson.OPT_SORT_KEYS),
            script.tool_answer_text,
            calling,
            after_tool,
        )
        ids = self._replies.get(key)
        if ids is None:
            if len(self._replies) >= _CACHE_LIMIT:
                self._replies.clear()
            text = reply_text(script, calling=calling, after_tool=after_tool)
            ids = self._replies[key] = [*fake_tokenize(text), EOS_ID]
        return ids

    def _choice(self, ids: list[int], finished: bool, logprobs: bool) -> orjson.Fragment:
        """The one choice of a generate answer, serialised once per distinct generation (the hot path)."""
        key = (tuple(ids), finished, logprobs)
        choice = self._choices.get(key)
        if choice is None:
            if len(self._choices) >= _CACHE_LIMIT:
                self._choices.clear()
            choice = self._choices[key] = orjson.Fragment(orjson.dumps(_generate_choice(0, ids, finished, logprobs)))
        return choice

    # -- POST /v1/chat/completions/derender ----------------------------------------------------------------
    async def derender(self, request: Request) -> Response:
        raw = await request.body()
        early = await self._admit(request, raw)
        if early is not None:
            return early
        body, bad = load_body(raw)
        if bad is not None:
            return bad
        if (bad := _derender_body_error(body)) is not None:
            return bad
        if body.get("stream") is True:
            return _json(vllm_error_body(501, "the vLLM stand-in does not derender streams"), 501)
        if (unknown := self._unknown_model(body.get("model"))) is not None:
            return unknown
        script = self.script
        gen: dict[str, Any] = body["generate_response"]
        for choice in gen["choices"]:
            count = len(choice.get("token_ids") or [])
            if count > script.max_model_len:
                index = choice.get("index")
                return _bad_request(
                    f"token_ids length ({count}) in choice {index} exceeds max_model_len ({script.max_model_len})."
                )
        prompt_ids = body.get("prompt_token_ids")
        if prompt_ids is not None and len(prompt_ids) > script.max_model_len:
            return _bad_request(
                f"prompt_token_ids length ({len(prompt_ids)}) exceeds max_model_len ({script.max_model_len})."
            )
        chat_request = body.get("chat_request")
        if not isinstance(chat_request, dict):
            return _bad_request(
                "chat_request is required when a tool or reasoning parser is configured because plain "
                "detokenization would leak raw parser markup into content."
            )
        choices = []
        for choice in gen["choices"]:
            ids = choice.get("token_ids")
            if not ids:
                return _bad_request(f"choice {choice.get('index')} has empty or null token_ids")
            if not isinstance(ids, list) or not _all_ints(ids) or min(ids) < 0:
                return _bad_request(f"choice {choice.get('index')}: token_ids must be non-negative integers")
            choices.append(self._derender_choice(choice, chat_request))
        completion_tokens = sum(len(c["token_ids"]) for c in gen["choices"])
        prompt_tokens = body.get("prompt_tokens") or 0
        answer = {
            "id": gen.get("request_id") or os.urandom(8).hex(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or script.model,
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "completion_tokens": completion_tokens,
                "prompt_tokens_details": None,
                "completion_tokens_details": None,
            },
            "prompt_logprobs": gen.get("prompt_logprobs"),
            "prompt_token_ids": None,
            "prompt_text": None,
            "kv_transfer_params": gen.get("kv_transfer_params"),
            "ec_transfer_params": None,
            "metrics": gen.get("metrics"),
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    def _derender_choice(self, choice: dict[str, Any], chat_request: dict[str, Any]) -> dict[str, Any]:
        ids: list[int] = choice["token_ids"]
        tool_choice = chat_request.get("tool_choice")
        tools_parsed = bool(chat_request.get("tools")) and tool_choice != "none"
        include_reasoning = chat_request.get("include_reasoning", True) is not False
        message = dict(self._parsed_message(ids, tools_parsed))
        if "tool_calls" in message:  # fresh ids per answer, like vLLM's random_uuid()
            message["tool_calls"] = [{**call, "id": os.urandom(8).hex()} for call in message["tool_calls"]]
        if not include_reasoning:
            message["reasoning"] = None
        if tool_choice == "required" or isinstance(tool_choice, dict):
            message["content"] = message["content"] or ""
        logprobs = choice.get("logprobs")
        return {
            "index": choice.get("index", 0),
            "message": message,
            "logprobs": chat_logprobs(logprobs) if logprobs is not None else None,
            "finish_reason": choice.get("finish_reason", "stop"),
            "stop_reason": choice.get("stop_reason"),
            "token_ids": ids if chat_request.get("return_token_ids") is True and include_reasoning else None,
            "routed_experts": None,
        }

    def _parsed_message(self, ids: list[int], tools_parsed: bool) -> dict[str, Any]:
        reasoning_parser = self.script.reasoning_parser
        key = (tuple(ids), tools_parsed, reasoning_parser)
        message = self._messages.get(key)
        if message is None:
            if len(self._messages) >= _CACHE_LIMIT:
                self._messages.clear()
            parsed = _parse_generation(
                decode_keeping_specials(ids),
                reasoning_parser=reasoning_parser,
                tools_parsed=tools_parsed,
                ids=ids,
                finished=True,
                tool_ids=itertools.repeat(""),  # each answer gets fresh ids
            )
            message = self._messages[key] = parsed.message
        return message
