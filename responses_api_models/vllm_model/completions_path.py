"""Completions mode (`use_completions_api: true`): each turn is one call to vLLM's /v1/completions, for base
models. Raw prompts (NeMo Gym's default) are the caller's text as is; with `render_chat_template` vLLM's
`/tokenize` renders the chat template (the served model's, or `tokenizer`'s) and the prompt goes as those token
IDs, so vLLM does not tokenize the text a second time. The answer has the shape of a chat completion; tool calls
in the text are not parsed (vLLM's /v1/completions runs no parsers), `<think>` is read as the reasoning format says.
"""

from __future__ import annotations

from typing import Any

from ngym.protocol.audio import AUDIO_KEYS
from ngym.protocol.completions import (
    COMPLETIONS_PATH,
    chat_from_completion,
    check_text_only,
    completion_prompt_ids,
    completions_request,
    raw_prompt,
)
from ngym.protocol.errors import ConversionError
from ngym.protocol.shapes import JSON
from ngym.upstream.client import UpstreamClient
from ngym.upstream.pool import Session
from responses_api_models.vllm_model.chat_path import chat_tokenize_request, tokenize
from responses_api_models.vllm_model.completion import Completion, answer_json, post_json


class CompletionsPath:
    def __init__(
        self, client: UpstreamClient, model: str, *, render: bool, chat_template: str | None, token_data: bool
    ) -> None:
        self.client = client
        self.model = model
        self.render = render
        self.chat_template = chat_template  # `tokenizer`'s template; None: the one vLLM serves
        self.token_data = token_data

    async def complete(self, payload: JSON, session: Session) -> Completion:
        _refuse_audio(payload.get("metadata"))
        prompt: str | list[int]
        if self.render:
            check_text_only(payload["messages"])
            prompt = await self.render_prompt(payload, session)
        else:
            if payload.get("tools"):
                raise ConversionError(
                    "tools need a chat template to be written into the prompt: with use_completions_api: true set "
                    "render_chat_template: true (the model's tool calls then come back as text, unparsed), or use "
                    "the chat path (use_completions_api: false)",
                    "tools",
                )
            prompt = raw_prompt(payload["messages"])
        body = completions_request(payload, prompt, self.token_data)
        answer = await post_json(self.client, session, COMPLETIONS_PATH, body)
        completion = answer_json(answer, COMPLETIONS_PATH)
        if completion is None:
            return Completion(None, answer.upstream)
        prompt_ids = prompt if isinstance(prompt, list) else completion_prompt_ids(completion)
        if self.token_data and prompt_ids is None:
            prompt_ids = await self._tokenize_text(body, session)
        chat = chat_from_completion(completion, self.model, prompt_ids)
        return Completion(chat, answer.upstream, path="completions")

    async def render_prompt(self, payload: JSON, session: Session) -> list[int]:
        """The chat template's rendering of the conversation, with the generation prompt, as token IDs."""
        request = chat_tokenize_request(self.model, payload, self.chat_template)
        return await tokenize(self.client, session, request)

    async def _tokenize_text(self, body: JSON, session: Session) -> list[int]:
        """The prompt IDs of a raw prompt, for a vLLM that did not return them inline: tokenized as /v1/completions
        tokenizes it (the same `add_special_tokens`)."""
        request: JSON = {"model": self.model, "prompt": body["prompt"]}
        if "add_special_tokens" in body:
            request["add_special_tokens"] = body["add_special_tokens"]
        return await tokenize(self.client, session, request)


def _refuse_audio(metadata: Any) -> None:
    if isinstance(metadata, dict):
        for key in AUDIO_KEYS:
            if metadata.get(key):
                raise ConversionError(
                    "audio is not supported with use_completions_api: true (/v1/completions is text-only)",
                    f"metadata.{key}",
                )
