"""What the token-exact path knows of a chat template, and the splice of a turn over vLLM's renders.

`learn`: how the template writes an assistant turn (`TurnTemplate.learn`, from three renders), then the probes
(ngym.protocol.splice_probes): conversations in the shapes real templates treat specially, each spliced as a
rollout's later turn would be. A probe that cannot be spliced (or a turn that cannot be learnt at all) makes the
lesson's `problem`, naming the behaviour, so that start-up refuses (require) or warns and uses the chat path
(auto) before any rollout. A shape the template refuses to render at all is skipped: the chat path cannot send it
either. One more render tells whether the template refuses vLLM's tool-call IDs but takes Mistral's 9-character
ones (`family_call_ids`: the model server then writes IDs in that shape, ngym.protocol.splice_ids).

`splice`: a turn's next prompt, at the marker (`splice_prompt`); when the template dropped the marker, where the
render of the conversation up to the turn ends (`splice_at_prefix`), which costs one more render.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ngym.http.app import HttpError
from ngym.protocol.shapes import JSON
from ngym.protocol.splice import (
    SPLICE_MARKERS,
    SpliceError,
    TokenTurn,
    TurnTemplate,
    last_token_turn,
    render_messages,
    splice_at_prefix,
    splice_prompt,
)
from ngym.protocol.splice_ids import with_vllm_call_ids
from ngym.protocol.splice_probes import PROBE_TOOLS, PROBES, TOOL_CALL_PROBE, Probe

# A render request body -> the rendered token IDs (an HttpError when vLLM refuses; None for a context overflow).
Render = Callable[[JSON], Awaitable[list[int] | None]]


@dataclass(frozen=True, slots=True)
class Lesson:
    """A template's turn (None when not even a plain answer can be cut), what it does that cannot be spliced
    exactly (None: every probe spliced), and whether it refuses tool-call IDs other than 9 alphanumeric
    characters (then the model server writes them so)."""

    template: TurnTemplate | None
    problem: str | None = None
    family_call_ids: bool = False


async def splice(
    turn: TokenTurn, body: JSON, rendered: Sequence[int], template: TurnTemplate, render: Render
) -> list[int]:
    """The next prompt from `rendered` (the render of `body`, whose messages are render_messages' output)."""
    try:
        return splice_prompt(turn, rendered, template)
    except SpliceError as at_marker:
        prefix_body = {**body, "messages": body["messages"][: turn.index + 1], "add_generation_prompt": False}
        prefix_body.pop("continue_final_message", None)
        prefix = await render(prefix_body)
        if prefix is None:
            raise
        try:
            return splice_at_prefix(turn, rendered, prefix, template)
        except SpliceError as at_prefix:
            why = str(at_prefix).removeprefix(f"{turn.name}: ")
            raise SpliceError(f"{at_marker}; and {why}") from None


async def learn(render: Render, model: str, settings: JSON) -> Lesson:
    """The template's lesson (its `problem` names what cannot be spliced, from a plain answer on)."""
    bodies = [_marker_body(model, marker, settings) for marker in SPLICE_MARKERS]
    followed = {**bodies[0], "messages": [*bodies[0]["messages"], {"role": "user", "content": "And?"}]}
    family_ids, rendered_a, rendered_b, rendered_followed = await asyncio.gather(
        _takes_only_family_call_ids(render, model, settings),
        render(bodies[0]),
        render(bodies[1]),
        _render_or_none(render, followed),
    )
    try:
        if rendered_a is None or rendered_b is None:
            raise SpliceError("a two-message conversation does not fit the model's context")
        template = TurnTemplate.learn(rendered_a, rendered_b, rendered_followed)
    except SpliceError as exc:
        return Lesson(None, f"{exc} (seen with a plain answer)", family_ids)
    reasons = await asyncio.gather(*(_probe(render, model, settings, template, probe) for probe in PROBES))
    shapes: dict[str, list[str]] = {}
    for probe, reason in zip(PROBES, reasons, strict=True):
        if reason is not None:
            shapes.setdefault(reason, []).append(probe.behaviour)
    found = [f"{reason} (seen with {'; '.join(behaviours)})" for reason, behaviours in shapes.items()]
    return Lesson(template, "; ".join(found) if found else None, family_ids)


async def _takes_only_family_call_ids(render: Render, model: str, settings: JSON) -> bool:
    """Whether the template refuses a tool call with vLLM's kind of ID but renders it with a 9-character one."""
    body: JSON = {"model": model, "tools": PROBE_TOOLS, "add_generation_prompt": True, **settings}
    messages = render_messages(TOOL_CALL_PROBE.messages, None)
    try:
        await render({**body, "messages": with_vllm_call_ids(messages)})
        return False
    except HttpError as exc:
        if exc.status >= 500:
            raise
    return await _render_or_none(render, {**body, "messages": messages}) is not None


async def _render_or_none(render: Render, body: JSON) -> list[int] | None:
    """The render; None when the template refuses it (or it does not fit)."""
    try:
        return await render(body)
    except HttpError as exc:
        if exc.status >= 500:
            raise
        return None


async def _probe(render: Render, model: str, settings: JSON, template: TurnTemplate, probe: Probe) -> str | None:
    """Why `probe` cannot be spliced (the SpliceError without the turn's name); None when it can."""
    turn = last_token_turn(probe.messages)
    assert turn is not None
    body: JSON = {"model": model, "messages": render_messages(probe.messages, turn), **settings}
    if probe.tools:
        body["tools"] = PROBE_TOOLS
    try:
        rendered = await render({**body, "add_generation_prompt": True})
        if rendered is None:
            return None
        await splice(turn, body, rendered, template, render)
    except HttpError as exc:
        if exc.status < 500:
            return None  # the template refuses this shape: so does the chat path, and no rollout can send it
        raise
    except SpliceError as exc:
        return str(exc).removeprefix(f"{turn.name}: ")
    return None


def _marker_body(model: str, marker: str, settings: JSON) -> JSON:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}],
        "add_generation_prompt": False,
        **settings,
    }
