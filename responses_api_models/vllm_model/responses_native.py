"""`is_responses_native: true`: `/v1/responses` goes to vLLM's own `/v1/responses` (for models whose Responses
support in vLLM is their native format, e.g. GPT-OSS), with the configured model, settings and session routing;
vLLM's answer comes back as it is. `/v1/chat/completions` is unaffected."""

from __future__ import annotations

from ngym.protocol.answers import context_length_response
from ngym.protocol.audio import audio_key
from ngym.protocol.errors import ConversionError
from ngym.protocol.shapes import JSON
from ngym.upstream.client import UpstreamClient
from ngym.upstream.pool import Session, Upstream
from responses_api_models.vllm_model.completion import answer_json, post_json
from responses_api_models.vllm_model.outbound import Outbound

RESPONSES_PATH = "/v1/responses"


class NativeResponses:
    def __init__(self, client: UpstreamClient, model: str, outbound: Outbound) -> None:
        self.client = client
        self.model = model
        self.outbound = outbound

    async def respond(self, body: JSON, session: Session) -> tuple[JSON, Upstream]:
        if body.get("stream"):
            raise ConversionError("streaming is not supported yet; send stream: false", "stream")
        key = audio_key(body.get("metadata"))
        if key is not None:
            # vLLM's Responses route would ignore the side channel and the model would never hear the audio.
            raise ConversionError(
                "the audio side channel needs the chat path; it is not available with is_responses_native: true",
                f"metadata.{key}",
            )
        payload = self.outbound.apply({**body, "model": self.model})
        answer = await post_json(self.client, session, RESPONSES_PATH, payload)
        response = answer_json(answer, RESPONSES_PATH)
        if response is None:
            return context_length_response(body, self.model), answer.upstream
        return response, answer.upstream
