"""The seed's troubleshooting, done for the user at start-up: each vLLM server is reachable, accepts the key,
serves the model, (for the token-exact path) serves the token endpoints, and (for completions with
render_chat_template) renders a chat prompt."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson

from ngym.config.secrets import redact_url
from ngym.http.app import error_message
from ngym.http.client import UpstreamError
from ngym.protocol.token_endpoints import DERENDER_PATH, GENERATE_PATH, RENDER_PATH
from ngym.servers.base import StartupError
from ngym.upstream.client import UpstreamClient
from ngym.upstream.pool import Upstream
from responses_api_models.vllm_model.upstream_errors import json_or_empty

TOKEN_ENDPOINTS = (RENDER_PATH, GENERATE_PATH, DERENDER_PATH)
SCALE_OUT_FLAG = "--enable-scale-out"
TRUST_TEMPLATE_FLAG = "--trust-request-chat-template"
TOKENIZE_PATH = "/tokenize"


@dataclass(frozen=True, slots=True)
class ServedModel:
    max_model_len: int | None


async def check_served_model(client: UpstreamClient, upstream: Upstream, model: str, timeout: float) -> ServedModel:
    try:
        result = await client.get(upstream, "/v1/models", timeout)
    except UpstreamError as exc:
        raise StartupError(
            f"cannot reach the vLLM server at {redact_url(upstream.models_url)}: {exc.reason}. "
            f"Check that vLLM is running (curl {redact_url(upstream.root_url)}/health) and that base_url "
            "(policy_base_url in env.yaml) is its address."
        ) from None
    if result.status in (401, 403):
        raise StartupError(
            f"the vLLM server at {upstream.shown} refused the api_key (HTTP {result.status}). Check that "
            "api_key (policy_api_key in env.yaml) matches the --api-key vLLM was started with."
        )
    if not result.ok:
        raise StartupError(
            f"the vLLM server at {redact_url(upstream.models_url)} answered HTTP {result.status}: "
            f"{error_message(result.body)}"
        )
    cards = [card for card in (json_or_empty(result.body).get("data") or []) if isinstance(card, dict)]
    card = next((c for c in cards if str(c.get("id")) == model), None)
    if card is None:
        served = [str(c.get("id")) for c in cards]
        raise StartupError(
            f"the vLLM server at {upstream.shown} does not serve model {model!r}; it serves: "
            f"{', '.join(served) or 'nothing'}. Set model (policy_model_name in env.yaml) to the name vLLM "
            "serves (its --served-model-name, or the --model path), and make sure the model finished loading."
        )
    max_model_len = card.get("max_model_len")
    return ServedModel(max_model_len if isinstance(max_model_len, int) and max_model_len > 0 else None)


async def missing_token_endpoints(client: UpstreamClient, upstream: Upstream, timeout: float) -> list[str]:
    """The token endpoints this server does not serve: vLLM without --enable-scale-out refuses them (403), an
    older vLLM does not know them (404); a served one answers an empty body with a 400."""

    async def missing(path: str) -> bool:
        try:
            result = await client.probe(upstream, path, b"{}", timeout)
        except UpstreamError:
            return True
        return result.status in (403, 404, 405, 501)

    flags = await asyncio.gather(*(missing(path) for path in TOKEN_ENDPOINTS))
    return [path for path, absent in zip(TOKEN_ENDPOINTS, flags, strict=True) if absent]


def token_endpoints_advice(upstream: Upstream, missing: list[str]) -> str:
    return (
        f"the vLLM server at {upstream.shown} does not serve {', '.join(missing)}, so training prompts cannot be "
        f"token-exact across turns; start vLLM with {SCALE_OUT_FLAG}"
    )


async def check_chat_template(
    client: UpstreamClient, upstream: Upstream, model: str, chat_template: str | None, timeout: float
) -> None:
    """render_chat_template: the server renders a chat prompt (with `tokenizer`'s template when one is given)."""
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    if chat_template is not None:
        body["chat_template"] = chat_template
    try:
        result = await client.probe(upstream, TOKENIZE_PATH, orjson.dumps(body), timeout)
    except UpstreamError as exc:
        raise StartupError(f"cannot reach the vLLM server at {upstream.shown}: {exc.reason}") from None
    if result.ok:
        return
    message = error_message(result.body)
    if chat_template is not None and TRUST_TEMPLATE_FLAG in message:
        raise StartupError(
            f"tokenizer: its chat template goes to vLLM with each prompt, and the vLLM server at {upstream.shown} "
            f"refuses templates sent with requests; start vLLM with {TRUST_TEMPLATE_FLAG}"
        )
    raise StartupError(
        f"render_chat_template: true, but the vLLM server at {upstream.shown} cannot render a chat prompt "
        f"(HTTP {result.status}: {message}); set tokenizer to a model whose tokenizer ships a chat template, or "
        "render_chat_template: false"
    )
