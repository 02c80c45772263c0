"""vllm_model: the Responses and Chat Completions APIs in front of one or more vLLM servers.

Per request: convert (pure, ngym.protocol), apply the configured settings (outbound.py) and the audio side
channel (audio.py), complete the turn on the session's vLLM server, convert back. How a turn is completed is
chosen once, at start-up: one chat completion (chat_path.py), the token-exact path (exact_path.py), or one text
completion (completions_path.py); with `is_responses_native`, `/v1/responses` is vLLM's own (responses_native.py).
`POST /loglikelihood` scores continuations (loglikelihood.py). The upstream client owns server choice, retries and
failover. Everything that can be computed once (headers, paths, option objects) is done at start-up.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ngym.http.app import HttpError, json_response, read_json_object
from ngym.http.client import HttpClient, RetryPolicy, Timeouts
from ngym.observability.upstream_metrics import TurnCounts, UpstreamCollector
from ngym.observability.vllm_load import vllm_servers_view
from ngym.protocol.answers import (
    chat_response_to_caller,
    chat_response_to_response,
    context_length_chat_response,
    context_length_response,
    empty_chat_response,
    empty_response,
)
from ngym.protocol.options import ConversionOptions
from ngym.protocol.requests import chat_request_to_upstream, ends_in_thinking_only, responses_to_chat_request
from ngym.protocol.shapes import JSON
from ngym.protocol.tokens import TokenDataError
from ngym.servers.base import ServerContext, StartupError
from ngym.servers.model import ModelServer
from ngym.upstream.client import SESSION_HEADER, UpstreamClient
from ngym.upstream.pool import UPSTREAM_COOKIE, Session, Upstream, UpstreamPool, parse_session_cookie
from responses_api_models.vllm_model.audio import AudioChannel
from responses_api_models.vllm_model.chat_path import ChatPath
from responses_api_models.vllm_model.completion import Completion, CompletionPath
from responses_api_models.vllm_model.completions_path import CompletionsPath
from responses_api_models.vllm_model.config import VllmModelConfig
from responses_api_models.vllm_model.exact_path import ExactTokenPath, template_settings
from responses_api_models.vllm_model.loglikelihood import LikelihoodScorer
from responses_api_models.vllm_model.outbound import Outbound
from responses_api_models.vllm_model.responses_native import NativeResponses
from responses_api_models.vllm_model.startup_checks import (
    SCALE_OUT_FLAG,
    check_chat_template,
    check_served_model,
    missing_token_endpoints,
    token_endpoints_advice,
)
from responses_api_models.vllm_model.tokenizer_template import TemplateNotFound, load_chat_template

__all__ = ["VllmModel", "VllmModelConfig"]


class VllmModel(ModelServer[VllmModelConfig]):
    config_model = VllmModelConfig

    @classmethod
    def http_client(cls, config: VllmModelConfig) -> HttpClient:
        return HttpClient(
            timeouts=Timeouts(total=config.request_timeout_s, connect=config.connect_timeout_s),
            retry=RetryPolicy(max_attempts=config.max_retries + 1, deadline=config.retry_deadline_s),
        )

    def __init__(self, config: VllmModelConfig, context: ServerContext) -> None:
        super().__init__(config, context)
        headers = dict(config.default_headers or {})
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.client = UpstreamClient(
            config.base_urls, self.http, headers, health_check_interval_s=config.health_check_interval_s
        )
        self.options = ConversionOptions(
            uses_reasoning_parser=config.uses_reasoning_parser,
            replace_developer_role_with_system=config.replace_developer_role_with_system,
            return_token_id_information=config.return_token_id_information,
            uses_interleaved_reasoning=config.uses_interleaved_reasoning,
            preserve_reasoning_in_assistant_content=config.preserve_reasoning_in_assistant_content,
            sequential_reasoning_allowed=config.sequential_reasoning_allowed,
        )
        self.stops_at_thinking = not config.sequential_reasoning_allowed
        self.outbound = Outbound(config, token_flags=config.return_token_id_information)
        self.chat_path = ChatPath(self.client, config.model, config.return_token_id_information)
        self.completions: CompletionsPath | None = None
        self.path: CompletionPath = self.chat_path
        self.audio: AudioChannel | None = AudioChannel(config.audio_root)
        if config.use_completions_api:
            self.completions = CompletionsPath(
                self.client,
                config.model,
                render=config.render_chat_template,
                chat_template=None,
                token_data=config.return_token_id_information,
            )
            self.path = self.completions
            self.audio = None  # /v1/completions is text-only: the completions path refuses audio
        self.native = NativeResponses(self.client, config.model, self.outbound) if config.is_responses_native else None
        self.scorer = LikelihoodScorer(
            self.client,
            config.model,
            max_context_tokens=config.max_context_tokens,
            seed=config.likelihood_seed,
            add_special_tokens=config.likelihood_add_special_tokens,
            renderer=self.completions if config.render_chat_template else None,
            chat_template_kwargs=config.chat_template_kwargs,
        )
        self.turns = TurnCounts()
        self.metrics.registry.register(UpstreamCollector(lambda: self.client.upstreams, self.turns))

    @property
    def pool(self) -> UpstreamPool:
        return self.client.pool

    def routes(self) -> list[BaseRoute]:
        return [
            *super().routes(),
            Route("/loglikelihood", self.loglikelihood, methods=["POST"]),
            Route("/vllm_servers", self.vllm_servers, methods=["GET"]),
        ]

    async def startup(self) -> None:
        config = self.config
        timeout = config.startup_check_timeout_s
        upstreams = self.client.upstreams
        served = await asyncio.gather(*(check_served_model(self.client, u, config.model, timeout) for u in upstreams))
        if self.completions is not None and config.render_chat_template:
            if config.tokenizer is not None and config.tokenizer != config.model:
                try:
                    self.completions.chat_template = load_chat_template(config.tokenizer)
                except TemplateNotFound as exc:
                    raise StartupError(str(exc)) from None
            template = self.completions.chat_template
            await asyncio.gather(
                *(check_chat_template(self.client, u, config.model, template, timeout) for u in upstreams)
            )
        if config.return_token_id_information and config.token_exact != "never" and self.completions is None:
            self.path = await self._exact_path_if_served([s.max_model_len for s in served]) or self.path
        elif config.return_token_id_information and config.token_exact != "never":
            self.warn(
                "use_completions_api: true renders (or tokenizes) the whole history again each turn, so a turn's "
                "prompt_token_ids may differ from the tokens of earlier turns; token-exact prompts are on the chat "
                f"path (use_completions_api: false, vLLM started with {SCALE_OUT_FLAG}). Set token_exact: never to "
                "silence this."
            )
        self.client.start()

    async def shutdown(self) -> None:
        await self.client.stop()

    async def _exact_path_if_served(self, max_model_lens: list[int | None]) -> ExactTokenPath | None:
        """The token-exact path when every server serves its endpoints; otherwise a warning (auto) or a refusal
        to start (require) naming the flag and each server without them."""
        upstreams = self.client.upstreams
        timeout = self.config.startup_check_timeout_s
        missing = await asyncio.gather(*(missing_token_endpoints(self.client, u, timeout) for u in upstreams))
        problems = [token_endpoints_advice(u, paths) for u, paths in zip(upstreams, missing, strict=True) if paths]
        problems += [
            f"the vLLM server at {u.shown} does not say its max_model_len in /v1/models, which the token-exact "
            "path needs to size each generation"
            for u, length in zip(upstreams, max_model_lens, strict=True)
            if length is None and not missing[u.index]
        ]
        path: ExactTokenPath | None = None
        if not problems:
            lengths = {u.index: length for u, length in zip(upstreams, max_model_lens, strict=True) if length}
            required = self.config.token_exact == "require"
            path = ExactTokenPath(self.client, self.config.model, lengths, self.chat_path, required=required)
            problems += await _template_problems(path, upstreams, template_settings(self.outbound.apply({})))
            path.warn = self.warn  # from now on, for template settings that requests bring
        if not problems:
            return path
        if self.config.token_exact == "require":
            raise StartupError("token_exact: require, but " + "; ".join(problems))
        self.warn(
            "; ".join(problems) + f". Using the chat path: prompt_token_ids are vLLM's re-rendering of the history "
            f"and may differ from the tokens of earlier turns (start vLLM with {SCALE_OUT_FLAG} and a chat template "
            "that can be spliced, or set token_exact: never to silence this)."
        )
        return None

    # --- routes -------------------------------------------------------------------------------------------

    async def responses(self, request: Request) -> Response:
        body = await read_json_object(request)
        session = _session(request)
        if self.native is not None:
            native, upstream = await self.native.respond(body, session)
            self.turns.add(upstream.index, "native", native)
            return self._reply(native, session, upstream)
        payload = await self._prepare(responses_to_chat_request, body)
        if self.stops_at_thinking and ends_in_thinking_only(payload["messages"]):
            return json_response(empty_response(body, self.config.model, "content_filter"))
        done = await self._complete(payload, session)
        if done.chat is None:
            answer = context_length_response(body, self.config.model)
        else:
            try:
                answer = chat_response_to_response(done.chat, body, self.options, done.prompt_token_ids)
            except TokenDataError as exc:
                raise _token_data_error(done, exc) from None
        return self._reply(answer, session, done.upstream)

    async def chat_completions(self, request: Request) -> Response:
        body = await read_json_object(request)
        session = _session(request)
        payload = await self._prepare(chat_request_to_upstream, body)
        if self.stops_at_thinking and ends_in_thinking_only(payload["messages"]):
            return json_response(empty_chat_response(self.config.model, "content_filter"))
        done = await self._complete(payload, session)
        if done.chat is None:
            answer = context_length_chat_response(self.config.model)
        else:
            try:
                answer = chat_response_to_caller(done.chat, self.options, done.prompt_token_ids)
            except TokenDataError as exc:
                raise _token_data_error(done, exc) from None
        return self._reply(answer, session, done.upstream)

    async def models(self, _request: Request) -> Response:
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "ngym"}
        return json_response({"object": "list", "data": [model]})

    async def vllm_servers(self, _request: Request) -> Response:
        """Each vLLM server's load as this model server and vLLM itself see it (ngym.observability.vllm_load)."""
        client = self.client
        view = await vllm_servers_view(self.http, client.upstreams, client.headers_of, self.turns)
        return json_response({"instance": self.context.instance_name, "vllm_servers": view})

    async def loglikelihood(self, request: Request) -> Response:
        body = await read_json_object(request)
        session = _session(request)
        answer, upstream = await self.scorer.score(body, session)
        return json_response(answer) if upstream is None else self._reply(answer, session, upstream)

    # --- helpers ------------------------------------------------------------------------------------------

    async def _prepare(self, convert: Callable[[JSON, str, ConversionOptions], JSON], body: JSON) -> JSON:
        """The request for vLLM: converted, the configured settings applied, the row's audio spliced in."""
        payload = self.outbound.apply(convert(body, self.config.model, self.options))
        if self.audio is not None:
            payload = await self.audio.splice(payload)
        return payload

    async def _complete(self, payload: JSON, session: Session) -> Completion:
        done = await self.path.complete(payload, session)  # ConversionError: what a path cannot send (a 422)
        self.turns.add(done.upstream.index, done.path, done.chat)
        return done

    def _reply(self, answer: dict[str, Any], session: Session, upstream: Upstream) -> Response:
        response = json_response(answer)
        if session.pinned != upstream.index:
            response.set_cookie(UPSTREAM_COOKIE, session.cookie_value(upstream.index), httponly=True, samesite="lax")
        return response


async def _template_problems(path: ExactTokenPath, upstreams: list[Upstream], settings: JSON) -> list[str]:
    """What each server's chat template (with the configured settings) does that cannot be spliced exactly,
    found by the probes before any rollout (template_lesson.py)."""
    problems: list[str] = []
    for upstream in upstreams:
        try:
            lesson = await path.lesson(upstream, settings)
        except HttpError as exc:
            problems.append(exc.message)
            continue
        if lesson.problem is not None:
            where = f"the chat template of the vLLM server at {upstream.shown}"
            problems.append(f"{where} cannot be spliced token-exactly: {lesson.problem}")
    return problems


def _session(request: Request) -> Session:
    parsed = parse_session_cookie(request.cookies.get(UPSTREAM_COOKIE))
    if parsed is not None:
        return Session(parsed[0], parsed[1])
    header = request.headers.get(SESSION_HEADER)
    if header:
        return Session(header, None, from_header=True)
    return Session(secrets.token_hex(12), None)


def _token_data_error(done: Completion, exc: TokenDataError) -> HttpError:
    return HttpError(502, f"vLLM at {done.upstream.shown} returned unusable token data: {exc}")
