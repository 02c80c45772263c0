"""POST /loglikelihood (NeMo Gym's vllm_loglikelihood): the summed log-probability of each continuation after a
context, as lm-evaluation-harness scores multiple-choice tasks.

Each continuation: `/tokenize` the context and context + continuation (the context's trailing whitespace moves to
the continuation), check that the context's tokens are a prefix of the whole, then one `/v1/completions` on those
token IDs with `echo`, `logprobs: 1`, `max_tokens: 1` at temperature 0; the continuation's score is the sum of the
echoed log-probs of its tokens. With `render_chat_template` the context is first rendered as one user message with
the generation prompt. A score that cannot be measured exactly is an error, never a made-up number. Sampling
settings (`sampling_overrides`, `extra_body`) do not apply: scoring samples nothing.
"""

from __future__ import annotations

import asyncio
import math

from pydantic import BaseModel, Field

from ngym.http.app import HttpError, validate
from ngym.protocol.completions import COMPLETIONS_PATH
from ngym.protocol.shapes import JSON
from ngym.upstream.client import UpstreamClient
from ngym.upstream.pool import Session, Upstream
from responses_api_models.vllm_model.chat_path import tokenize
from responses_api_models.vllm_model.completion import answer_json, post_json
from responses_api_models.vllm_model.completions_path import CompletionsPath
from responses_api_models.vllm_model.upstream_errors import json_or_empty, upstream_http_error

DETOKENIZE_PATH = "/detokenize"


class LogLikelihoodRequest(BaseModel):
    context: str = Field(min_length=1)
    continuations: list[str] = Field(min_length=2, max_length=26)


class LikelihoodScorer:
    def __init__(
        self,
        client: UpstreamClient,
        model: str,
        *,
        max_context_tokens: int | None,
        seed: int,
        add_special_tokens: bool,
        renderer: CompletionsPath | None,
        chat_template_kwargs: JSON | None,
    ) -> None:
        self.client = client
        self.model = model
        self.max_context_tokens = max_context_tokens
        self.seed = seed
        self.add_special_tokens = add_special_tokens
        self.renderer = renderer  # render_chat_template: the completions path renders the context
        self.chat_template_kwargs = chat_template_kwargs

    async def score(self, body: JSON, session: Session) -> tuple[JSON, Upstream | None]:
        request = validate(LogLikelihoodRequest, body)
        if not request.context.strip():
            raise HttpError(422, "the context is only whitespace; there is nothing to condition on", param="context")
        for index, continuation in enumerate(request.continuations):
            if not continuation:
                raise HttpError(422, "a continuation must not be empty", param=f"continuations[{index}]")
        prompt = request.context
        if self.renderer is not None:
            prompt = await self._rendered(prompt, session)
        context = prompt.rstrip()
        suffix = prompt[len(context) :]
        context_ids = await self._tokenize(context, session)
        if not context_ids:
            raise HttpError(422, "the context tokenizes to no tokens", param="context")
        scores = await asyncio.gather(
            *(
                self._score_one(context + suffix + continuation, continuation, context_ids, index, session)
                for index, continuation in enumerate(request.continuations)
            )
        )
        upstream = self.client.upstreams[session.served_by] if session.served_by is not None else None
        return {"model": self.model, "scores": scores}, upstream

    async def _score_one(
        self, text: str, continuation: str, context_ids: list[int], index: int, session: Session
    ) -> JSON:
        token_ids = await self._tokenize(text, session)
        boundary = len(context_ids)
        if len(token_ids) <= boundary or token_ids[:boundary] != context_ids:
            raise HttpError(
                422,
                "the context's tokens are not a prefix of the tokens of context + continuation (the tokenizer merges "
                "across the boundary), so the continuation's tokens are ambiguous; refusing an incorrect score",
                param=f"continuations[{index}]",
            )
        if self.max_context_tokens is not None and len(token_ids) + 1 > self.max_context_tokens:
            raise HttpError(
                422,
                f"context + continuation is {len(token_ids)} tokens, and scoring needs one more; max_context_tokens "
                f"is {self.max_context_tokens}",
                param=f"continuations[{index}]",
            )
        request = {
            "model": self.model,
            "prompt": token_ids,
            "temperature": 0,
            "max_tokens": 1,
            "logprobs": 1,
            "echo": True,
            "seed": self.seed,
        }
        answer = await post_json(self.client, session, COMPLETIONS_PATH, request)
        completion = answer_json(answer, COMPLETIONS_PATH)
        if completion is None:
            raise HttpError(
                422,
                f"context + continuation ({len(token_ids)} tokens) does not fit the model's context",
                param=f"continuations[{index}]",
            )
        selected = _continuation_logprobs(completion, len(token_ids), boundary)
        if isinstance(selected, str):
            raise HttpError(502, f"vLLM at {answer.upstream.shown_url(COMPLETIONS_PATH)}: {selected}")
        return {
            "continuation": continuation,
            "logprob": sum(selected),
            "context_tokens": boundary,
            "continuation_token_ids": token_ids[boundary:],
            "token_logprobs": selected,
        }

    async def _tokenize(self, text: str, session: Session) -> list[int]:
        request = {"model": self.model, "prompt": text, "add_special_tokens": self.add_special_tokens}
        return await tokenize(self.client, session, request)

    async def _rendered(self, context: str, session: Session) -> str:
        """The chat template's text for the context as one user message, with the generation prompt."""
        assert self.renderer is not None
        payload: JSON = {"messages": [{"role": "user", "content": context}]}
        if self.chat_template_kwargs:
            payload["chat_template_kwargs"] = self.chat_template_kwargs
        ids = await self.renderer.render_prompt(payload, session)
        answer = await post_json(self.client, session, DETOKENIZE_PATH, {"model": self.model, "tokens": ids})
        result = answer.result
        if not result.ok:
            raise upstream_http_error(answer.upstream, result.status, result.body, DETOKENIZE_PATH)
        text = json_or_empty(result.body).get("prompt")
        if not isinstance(text, str):
            raise HttpError(502, f"vLLM at {answer.upstream.shown_url(DETOKENIZE_PATH)} answered without 'prompt'")
        return text


def _continuation_logprobs(completion: JSON, prompt_length: int, boundary: int) -> list[float] | str:
    """The echoed log-probs of the continuation's tokens, or what is wrong with the answer."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return "expected exactly one echoed completion"
    logprobs = choices[0].get("logprobs")
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(values, list) or len(values) != prompt_length + 1:
        return "the answer does not hold one log-prob per prompt token plus the generated one (echo, logprobs)"
    selected = values[boundary:prompt_length]
    for offset, value in enumerate(selected):
        if type(value) not in (int, float) or not math.isfinite(value):
            return f"the log-prob of prompt token {boundary + offset} is {value!r}; it cannot be scored"
    return [float(value) for value in selected]
