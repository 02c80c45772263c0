"""The token-exact path: render, splice, generate, derender, all on the session's vLLM server.

A turn with no token data in its history (a rollout's first) has nothing to splice: it is one chat completion.

Each turn's prompt is the previous turn's prompt + generated IDs exactly, then the template's tokens for what
came after it (ngym.protocol.splice; template_lesson.py). Stateless: the IDs travel in the history, so any worker
of any process can serve the next turn.

A template with a behaviour the splice cannot handle is found when it is learnt (start-up, for the configured
settings): a request with other template settings learns them on its first turn; then `require` answers 502
naming the behaviour and `auto` warns once and completes such turns on the chat path. A turn that still cannot be
spliced is the model server's failure (502), never the caller's.

A template that refuses tool-call IDs other than Mistral's 9 alphanumeric characters gets every other ID written
in that shape, on every path (ngym.protocol.splice_ids): rollouts with vLLM's own IDs render instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from ngym.http.app import HttpError
from ngym.protocol.errors import ConversionError
from ngym.protocol.shapes import JSON
from ngym.protocol.splice import SpliceError, last_token_turn, render_messages
from ngym.protocol.splice_ids import has_other_call_ids, with_family_call_ids
from ngym.protocol.token_endpoints import (
    DERENDER_PATH,
    GENERATE_PATH,
    RENDER_PATH,
    caller_max_tokens,
    chat_completion,
    derender_request,
    empty_derendered,
    generate_request,
    read_generation,
    shown_token_count,
    stop_string_cut,
)
from ngym.protocol.tokens import TokenDataError
from ngym.upstream.client import UpstreamClient
from ngym.upstream.pool import Session, Upstream
from responses_api_models.vllm_model.chat_path import ChatPath
from responses_api_models.vllm_model.completion import Completion, answer_json, post_json
from responses_api_models.vllm_model.template_lesson import Lesson, Render, learn, splice
from responses_api_models.vllm_model.upstream_errors import is_context_length_error, json_or_empty, upstream_http_error

# Distinct chat_template_kwargs seen in requests; each needs one template lesson per server.
MAX_LEARNT_TEMPLATES = 256
TEMPLATE_FIELDS = ("chat_template", "chat_template_kwargs")


class ExactTokenPath:
    def __init__(
        self,
        client: UpstreamClient,
        model: str,
        max_model_len: dict[int, int],
        first_turns: ChatPath,
        *,
        required: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.max_model_len = max_model_len  # per server index, read from /v1/models at start-up
        self._lessons: dict[tuple[int, bytes], Lesson] = {}
        self.first_turns = first_turns
        self.required = required  # token_exact: require (else auto)
        self.warn = warn

    async def complete(self, payload: JSON, session: Session) -> Completion:
        messages = payload["messages"]
        if has_other_call_ids(messages) and await self._wants_family_call_ids(payload, session):
            messages = with_family_call_ids(messages)
            payload = {**payload, "messages": messages}
        try:
            turn = last_token_turn(messages)
        except SpliceError as exc:  # the caller's history: its token data does not fit its turns
            raise ConversionError(str(exc), "messages") from None
        if turn is None:
            # Nothing to splice: the prompt is the conversation as the template renders it, which is what one
            # chat completion's prompt_token_ids are (vLLM's chat route renders through the same code as render).
            return await self.first_turns.complete(payload, session)
        render_body = {**payload, "messages": render_messages(messages, turn)}
        answer = await post_json(self.client, session, RENDER_PATH, render_body)
        rendered = answer_json(answer, RENDER_PATH)
        upstream = answer.upstream
        if rendered is None:
            return Completion(None, upstream)
        lesson = await self.lesson(upstream, template_settings(payload))
        if lesson.problem is not None or lesson.template is None:
            if self.required:
                raise HttpError(502, f"token_exact: require, but {lesson.problem}")
            return await self.first_turns.complete(payload, session)  # warned once, when it was learnt

        async def render_again(body: JSON) -> list[int] | None:
            again = answer_json(await post_json(self.client, session, RENDER_PATH, body), RENDER_PATH)
            return None if again is None else _token_ids(again, upstream)

        try:
            prompt = await splice(turn, render_body, _token_ids(rendered, upstream), lesson.template, render_again)
        except SpliceError as exc:
            # The template's doing, not the caller's: the model server cannot serve this turn exactly.
            raise HttpError(502, f"vLLM at {upstream.shown}: cannot splice the next prompt exactly: {exc}") from None
        request = generate_request(rendered, prompt, self.max_model_len[upstream.index], caller_max_tokens(payload))
        if request is None:
            return Completion(None, upstream)
        answer = await post_json(self.client, session, GENERATE_PATH, request)
        generated = answer_json(answer, GENERATE_PATH)
        if generated is None:
            return Completion(None, answer.upstream)
        upstream = answer.upstream
        try:
            generation = read_generation(generated)
        except TokenDataError as exc:
            raise HttpError(502, f"vLLM at {upstream.shown_url(GENERATE_PATH)}: {exc}") from None
        stop = generated["choices"][0].get("stop_reason")
        shown = shown_token_count(generated)
        derendered = await self._derender(generated, payload, prompt, shown, session, texts=isinstance(stop, str))
        if isinstance(stop, str):
            # The tokens run past the stop string, which vLLM cuts out of the text: derender up to it.
            cut = stop_string_cut(derendered, stop)
            if cut is not None:
                derendered = await self._derender(generated, payload, prompt, cut[0], session)
                _append_text(derendered, cut[1])
        try:
            chat = chat_completion(derendered, prompt, generation)
        except TokenDataError as exc:
            raise HttpError(502, f"vLLM at {upstream.shown_url(DERENDER_PATH)}: {exc}") from None
        return Completion(chat, upstream, path="exact")

    async def _derender(
        self, generated: JSON, payload: JSON, prompt: list[int], shown: int, session: Session, texts: bool = False
    ) -> JSON:
        request = derender_request(self.model, generated, payload, prompt, shown, with_log_probs=texts)
        if request is None:
            return empty_derendered(generated, self.model)
        answer = await post_json(self.client, session, DERENDER_PATH, request)
        derendered = answer_json(answer, DERENDER_PATH)
        if derendered is None:
            raise HttpError(502, f"vLLM at {answer.upstream.shown_url(DERENDER_PATH)} refused the generated tokens")
        return derendered

    async def lesson(self, upstream: Upstream, settings: JSON) -> Lesson:
        """What this server's chat template does, learnt once per server and template settings (template_settings:
        the request's chat_template and chat_template_kwargs). Start-up learns the configured settings; a request
        with other settings learns them on its first turn (two such turns arriving together may both learn them:
        same result), and a problem found then is warned about once."""
        key = (upstream.index, _settings_key(settings))
        lesson = self._lessons.get(key)
        if lesson is None:
            lesson = await learn(self._render_on(upstream), self.model, settings)
            if len(self._lessons) >= MAX_LEARNT_TEMPLATES:
                self._lessons.clear()
            self._lessons[key] = lesson
            if lesson.problem is not None and self.warn is not None and not self.required:
                self.warn(f"vLLM at {upstream.shown}: {untouched_warning(lesson.problem, settings)}")
        return lesson

    async def _wants_family_call_ids(self, payload: JSON, session: Session) -> bool:
        """Whether the request's template takes only 9-character tool-call IDs: from any server's lesson of its
        settings, else learnt on the server the session would use (a template sent with requests, first seen
        with such IDs; a template that cannot be probed keeps the caller's IDs)."""
        settings = template_settings(payload)
        wanted = _settings_key(settings)
        known = [lesson for (_, key), lesson in self._lessons.items() if key == wanted]
        if known:
            return known[0].family_call_ids
        try:
            return (await self.lesson(self.client.pool.choose(session), settings)).family_call_ids
        except HttpError:
            return False

    def _render_on(self, upstream: Upstream) -> Render:
        async def render(body: JSON) -> list[int] | None:
            result = await self.client.probe(upstream, RENDER_PATH, orjson.dumps(body), timeout=30)
            if is_context_length_error(result.status, result.body):
                return None
            if not result.ok:
                raise upstream_http_error(upstream, result.status, result.body, RENDER_PATH)
            return _token_ids(json_or_empty(result.body), upstream)

        return render


def untouched_warning(problem: str, settings: JSON) -> str:
    """The warning for turns that go to the chat path because their template cannot be spliced exactly."""
    which = "the chat template sent with requests" if settings.get("chat_template") else "the chat template"
    return (
        f"{which} cannot be spliced token-exactly: {problem}. Such turns use the chat path: their "
        "prompt_token_ids are vLLM's re-rendering of the history and may differ from the tokens of earlier turns "
        "(token_exact: require refuses instead; never silences this)."
    )


def _append_text(derendered: JSON, text: str) -> None:
    """Add text to the field the parsed generation ended in: content, or reasoning when there is none."""
    if not text:
        return
    message = derendered["choices"][0]["message"]
    field = "reasoning" if not message.get("content") and message.get("reasoning") else "content"
    message[field] = (message.get(field) or "") + text


def template_settings(payload: JSON) -> JSON:
    """The request fields that change how the chat template renders."""
    return {key: payload[key] for key in TEMPLATE_FIELDS if payload.get(key) is not None}


def _settings_key(settings: JSON) -> bytes:
    return orjson.dumps(settings, option=orjson.OPT_SORT_KEYS)


def _token_ids(rendered: JSON, upstream: Upstream) -> list[int]:
    ids = rendered.get("token_ids")
    if not isinstance(ids, list) or not ids:
        raise HttpError(502, f"vLLM at {upstream.shown_url(RENDER_PATH)} answered without token_ids")
    return ids
