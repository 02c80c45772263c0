"""The stand-in's text-completions, Responses and detokenize routes, as vLLM 0.32 serves them.

Wire shapes follow ``tests/data/vllm_recordings/{completions,responses}_*.json`` and ``detokenize.json`` (checked
by ``tests/testkit/test_standin_completions_recordings.py``):

- ``POST /v1/completions``: a text prompt (the fake byte tokeniser) or token IDs; the scripted generation is
  ``StandinScript.completion_text`` then ``<|im_end|>``, cut by ``max_tokens`` and ``stop`` strings. ``logprobs: N``
  gives the completions log-probs block (``token_id:N`` tokens with ``return_tokens_as_token_ids``);
  ``return_token_ids`` puts ``token_ids`` and ``prompt_token_ids`` on the choice; ``echo`` puts the prompt first
  (its first log-prob null);
- ``POST /v1/responses``: vLLM's own Responses route: the chat route's reply (tool calls with tools in tool-call
  mode), as message, function_call and reasoning items, with vLLM's top-level fields;
- ``POST /detokenize``: token IDs -> text, special tokens kept.

Faults: ``down`` and the api key apply; queued faults are consumed by completions and responses (model calls).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from testkit.standin.script import RouteHost, StandinScript
from testkit.standin.wire import (
    EOS_ID,
    SPECIAL_TEXT,
    _json,
    context_length_error_body,
    fake_logprob,
    fake_tokenize,
    max_tokens_error_body,
    render_chat,
    unknown_model_error_body,
    vllm_error_body,
)

COMPLETIONS_PATH = "/v1/completions"
RESPONSES_PATH = "/v1/responses"
DETOKENIZE_PATH = "/detokenize"


def token_text(token_id: int) -> str:
    """A token's text, special tokens included (what /detokenize and echoed prompts show)."""
    return _token_bytes(token_id).decode(errors="replace")


def detokenize(ids: list[int]) -> str:
    """The text of token IDs, special tokens kept (a multi-byte character spans several byte tokens; an ID outside
    the fake vocabulary reads as U+FFFD)."""
    return b"".join(_token_bytes(i) for i in ids).decode(errors="replace")


def _token_bytes(token_id: int) -> bytes:
    if token_id in SPECIAL_TEXT:
        return SPECIAL_TEXT[token_id].encode()
    return bytes([token_id]) if 0 <= token_id < 256 else b"\xff"  # outside the fake vocabulary: U+FFFD


class CompletionsRoutes:
    """/v1/completions, /v1/responses and /detokenize for one :class:`~testkit.standin.app.StandinApp`."""

    def __init__(self, app: RouteHost) -> None:
        self._app = app

    def routes(self) -> list[Route]:
        return [
            Route(COMPLETIONS_PATH, self.completions, methods=["POST"]),
            Route(RESPONSES_PATH, self.responses, methods=["POST"]),
            Route(DETOKENIZE_PATH, self.detokenize, methods=["POST"]),
        ]

    @property
    def script(self) -> StandinScript:
        return self._app.script

    async def _admit(self, request: Request, model_call: bool) -> tuple[Any, Response | None]:
        raw = await request.body()
        script = self.script
        fault = script.faults.popleft() if model_call and script.faults else None
        early = await self._app._admit(request, raw, fault)
        if early is not None:
            return None, early
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None, _json(vllm_error_body(400, "the vLLM stand-in could not parse the body"), 400)
        if not isinstance(body, dict):
            return None, _json(vllm_error_body(400, "the body must be a JSON object"), 400)
        model = body.get("model")
        if script.check_model and model is not None and model != script.model:
            return None, _json(unknown_model_error_body(str(model), script.model), 404)
        return body, None

    async def detokenize(self, request: Request) -> Response:
        body, early = await self._admit(request, model_call=False)
        if early is not None:
            return early
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and t >= 0 for t in tokens):
            return _json(vllm_error_body(400, "tokens must be a list of non-negative ints"), 400)
        return _json({"prompt": detokenize(tokens)})

    async def completions(self, request: Request) -> Response:
        body, early = await self._admit(request, model_call=True)
        if early is not None:
            return early
        script = self.script
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            prompt_ids = fake_tokenize(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            prompt_ids = list(prompt)
        else:
            return _json(vllm_error_body(400, "prompt must be a string or a list of token IDs"), 400)
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens > script.max_model_len:
            return _json(max_tokens_error_body(max_tokens, script.max_model_len), 400)
        if len(prompt_ids) > script.max_model_len:
            return _json(context_length_error_body(script.max_model_len), 400)
        room = script.max_model_len - len(prompt_ids)
        limit = room if max_tokens is None else min(max_tokens, room)
        ids, text, finish, stop_reason = _generate(script.completion_text, limit, body.get("stop"))
        want_ids = body.get("return_token_ids") is True
        top = body.get("logprobs")
        echo = body.get("echo") is True
        choice: dict[str, Any] = {
            "index": 0,
            "text": (detokenize(prompt_ids) if echo else "") + text,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": stop_reason,
            "token_ids": ids if want_ids else None,
            "prompt_logprobs": None,
            "prompt_token_ids": prompt_ids if want_ids else None,
            "routed_experts": None,
        }
        if isinstance(top, int):
            as_ids = body.get("return_tokens_as_token_ids") is True
            choice["logprobs"] = _completion_logprobs(prompt_ids if echo else [], ids, as_ids)
            if echo:
                choice["prompt_logprobs"] = [None] + [
                    {str(t): {"logprob": fake_logprob(t), "rank": 1, "decoded_token": token_text(t)}}
                    for t in prompt_ids[1:]
                ]
        answer = {
            "id": self._app._next_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": script.model,
            "choices": [choice],
            "service_tier": None,
            "system_fingerprint": self._app.fingerprint,
            "usage": {
                "prompt_tokens": len(prompt_ids),
                "total_tokens": len(prompt_ids) + len(ids),
                "completion_tokens": len(ids),
                "prompt_tokens_details": None,
                "completion_tokens_details": None,
            },
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }
        return _json(answer)

    async def responses(self, request: Request) -> Response:
        body, early = await self._admit(request, model_call=True)
        if early is not None:
            return early
        script = self.script
        messages = _responses_messages(body)
        tools = body.get("tools") or None
        prompt_ids = fake_tokenize(render_chat(messages, tools))
        if len(prompt_ids) > script.max_model_len:
            return _json(context_length_error_body(script.max_model_len), 400)
        max_tokens = body.get("max_output_tokens")
        room = script.max_model_len - len(prompt_ids)
        limit = room if max_tokens is None else min(max_tokens, room)
        calling = bool(tools) and script.tool_call_mode and not (messages and messages[-1].get("role") == "tool")
        gen = self._app._generate(self._app._reply_text(messages, calling), limit, bool(tools))
        return _json(self._response_body(body, gen.message, gen.finish_reason, len(prompt_ids), len(gen.token_ids)))

    def _response_body(
        self, body: dict[str, Any], message: dict[str, Any], finish: str, prompt_tokens: int, output_tokens: int
    ) -> dict[str, Any]:
        next_id = self._app._next_id
        output: list[dict[str, Any]] = []
        if message.get("reasoning"):
            output.append(
                {
                    "id": next_id("rs_"),
                    "summary": [],
                    "type": "reasoning",
                    "content": [{"text": message["reasoning"], "type": "reasoning_text"}],
                    "encrypted_content": None,
                    "status": None,
                }
            )
        if message.get("content"):
            part = {"annotations": [], "text": message["content"], "type": "output_text", "logprobs": None}
            output.append(
                {
                    "id": next_id("msg_"),
                    "content": [part],
                    "role": "assistant",
                    "status": "completed",
                    "type": "message",
                    "phase": None,
                }
            )
        for call in message.get("tool_calls") or []:
            output.append(
                {
                    "arguments": call["function"]["arguments"],
                    "call_id": call["id"],
                    "name": call["function"]["name"],
                    "type": "function_call",
                    "id": next_id("fc_"),
                    "async": None,
                    "caller": None,
                    "namespace": None,
                    "status": "completed",
                }
            )
        incomplete = {"reason": "max_output_tokens"} if finish == "length" else None
        return {
            "id": next_id("resp_"),
            "created_at": int(time.time()),
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "metadata": body.get("metadata"),
            "model": self.script.model,
            "object": "response",
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "temperature": float(body.get("temperature", 1.0)),
            "tool_choice": body.get("tool_choice", "auto" if body.get("tools") else "none"),
            "tools": [_echoed_tool(tool) for tool in body.get("tools") or [] if isinstance(tool, dict)],
            "top_p": float(body.get("top_p", 1.0)),
            "background": False,
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None,
            "previous_response_id": None,
            "prompt": None,
            "reasoning": body.get("reasoning"),
            "service_tier": "auto",
            "status": "incomplete" if incomplete else "completed",
            "text": None,
            "top_logprobs": None,
            "truncation": "disabled",
            "usage": {
                "input_tokens": prompt_tokens,
                "input_tokens_details": {
                    "cached_tokens": 0,
                    "cache_write_tokens": 0,
                    "input_tokens_per_turn": [],
                    "cached_tokens_per_turn": [],
                },
                "output_tokens": output_tokens,
                "output_tokens_details": {
                    "reasoning_tokens": 0,
                    "tool_output_tokens": 0,
                    "output_tokens_per_turn": [],
                    "tool_output_tokens_per_turn": [],
                },
                "total_tokens": prompt_tokens + output_tokens,
            },
            "user": body.get("user"),
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "input_messages": None,
            "output_messages": None,
        }


def _generate(text: str, limit: int, stop: Any) -> tuple[list[int], str, str, str | None]:
    """The generated IDs (with the end-of-text ID when finished), the text shown, finish_reason, stop_reason.
    Like vLLM, a stop string's tokens are generated but its text is not shown."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str) and s]
    cuts = [(text.find(s), s) for s in stops if s in text]
    if cuts:
        at, matched = min(cuts)
        ids = fake_tokenize(text[: at + len(matched)])
        if len(ids) <= limit:
            return ids, text[:at], "stop", matched
    else:
        ids = [*fake_tokenize(text), EOS_ID]
        if len(ids) <= limit:
            return ids, text, "stop", None
    ids = ids[:limit]
    return ids, detokenize([i for i in ids if i != EOS_ID]), "length", None


def _completion_logprobs(prompt_ids: list[int], ids: list[int], as_ids: bool) -> dict[str, Any]:
    """The completions log-probs block: tokens, token_logprobs and top_logprobs side by side (echoed prompt
    tokens first, the very first with null log-probs, as vLLM has nothing to condition it on)."""
    tokens = [*prompt_ids, *ids]
    names = [f"token_id:{t}" if as_ids else token_text(t) for t in tokens]
    values: list[float | None] = [fake_logprob(t) for t in tokens]
    if prompt_ids:
        values[0] = None
    offsets, at = [], 0
    for name in names:
        offsets.append(at)
        at += len(name)
    top = [None if v is None else {n: v} for n, v in zip(names, values, strict=True)]
    return {"text_offset": offsets, "token_logprobs": values, "tokens": names, "top_logprobs": top}


def _echoed_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as vLLM's Responses answer echoes it: every field of its schema, in its order."""
    return {
        "name": tool.get("name"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
        "type": "function",
        "allowed_callers": None,
        "async": None,
        "defer_loading": None,
        "description": tool.get("description"),
        "output_schema": None,
    }


def _responses_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Enough of vLLM's Responses input handling for the scripted reply: instructions, string or message input."""
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "system", "content": body["instructions"]})
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
        return messages
    for item in given if isinstance(given, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": str(item.get("output"))})
        elif item.get("role") in ("user", "system", "developer", "assistant"):
            content = item.get("content")
            text = (
                content
                if isinstance(content, str)
                else "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
            )
            messages.append({"role": item["role"], "content": text})
    return messages
