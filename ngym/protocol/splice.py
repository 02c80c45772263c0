"""Token-exact prompts: each turn's prompt starts with the previous turn's prompt and generated IDs, exactly.

Re-rendering a conversation as text and tokenizing it again does not give back the tokens the model produced
(BPE merges across the old boundary, a generation cut by max_tokens has no end-of-turn token, templates drop
earlier reasoning). So the next prompt is built from three parts:

1. the last assistant turn that carries token data: its `prompt_token_ids + generation_token_ids`, as they are;
2. the template's closing tokens of that turn that the model did not generate itself (all of them after a cut
   generation, the rest after its end-of-turn token when it stopped on it);
3. the tokens of everything after that turn (tool results, user messages, the generation prompt), cut from a
   render of the conversation in which that turn's content is replaced by a marker (and its tool calls'
   arguments by `{}`, so that no argument text can look like the closing): after the marker come the turn's tool
   calls and the closing, and the closing's first occurrence ends the turn (`splice_prompt`).

A template that drops the content of such a turn (Llama 3.1-3.3 and Mistral v0.3 write a tool-call turn without
its content) leaves no marker to find: then the turn ends where the render of the conversation up to that turn
(no generation prompt) ends, when the full render begins with it (`splice_at_prefix`).

The marker's tokens are learnt once per template from two renders that differ only in the assistant content,
and the closing from a third in which a user message follows that turn (`TurnTemplate.learn`): the closing is
what follows the content in both, so that what a template writes only after the last message (Phi-4-mini's
end-of-text without a generation prompt) is not taken for the end of every turn. Anything that does not cut
cleanly is a SpliceError naming the turn and what the template does. Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ngym.protocol.shapes import JSON
from ngym.protocol.tokens import TOKEN_FIELDS

# Two assistant contents that tokenize apart at both ends and never occur in real text.
SPLICE_MARKERS = ("ngymSpliceMarkerQ7ZKx", "WvbqSpliceMarkerJ3XVy")
# Tokens of the marker whose merges may depend on the text around it; the rest is searched for.
_MARKER_EDGE = 1


class SpliceError(ValueError):
    """The next prompt cannot be built exactly; the message says which turn and why."""


@dataclass(frozen=True, slots=True)
class TurnTemplate:
    """How the chat template writes an assistant turn: the marker content's tokens, what follows content
    (`closing_ids`), and what it writes after that only when the turn is the last message (`ending_ids`)."""

    marker_ids: tuple[int, ...]
    closing_ids: tuple[int, ...]
    ending_ids: tuple[int, ...] = ()

    @classmethod
    def learn(
        cls, rendered_a: Sequence[int], rendered_b: Sequence[int], followed: Sequence[int] | None = None
    ) -> TurnTemplate:
        """From the renders (no generation prompt) of one conversation ending in an assistant turn whose content
        is SPLICE_MARKERS[0] in `rendered_a` and SPLICE_MARKERS[1] in `rendered_b`; `followed`: the render of
        `rendered_a`'s conversation with a user message after that turn (None: the closing is all that follows
        the content)."""
        head = _common_prefix(rendered_a, rendered_b)
        tail = _common_prefix(rendered_a[::-1], rendered_b[::-1])
        end = len(rendered_a) - tail
        if end <= head:
            raise SpliceError("the chat template does not write an assistant message's content into the prompt")
        if tail == 0:
            raise SpliceError(
                "the chat template writes nothing after an assistant message's content, so a turn's end cannot "
                "be found in the prompt"
            )
        marker, after = tuple(rendered_a[head:end]), tuple(rendered_a[end:])
        if followed is None or list(followed[:end]) != list(rendered_a[:end]):
            return cls(marker, after)
        size = _common_prefix(after, followed[end:])
        if size == 0:
            raise SpliceError(
                f"the chat template ends an assistant message with {list(after)} when it is the last message but "
                "with other tokens when more messages follow it (as gpt-oss's harmony format ends the last answer "
                "with <|return|> and earlier ones with <|end|>), so the tokens the model generated to end its turn "
                "are not the ones the next prompt has there"
            )
        return cls(marker, after[:size], after[size:])

    @property
    def searched_ids(self) -> tuple[int, ...]:
        ids = self.marker_ids
        return ids[_MARKER_EDGE:-_MARKER_EDGE] if len(ids) > 2 * _MARKER_EDGE + 1 else ids


@dataclass(frozen=True, slots=True)
class TokenTurn:
    """The last assistant message of a conversation that carries token data from the model."""

    index: int  # in the messages
    number: int  # 1-based count of assistant messages up to it, for messages
    prompt_token_ids: list[int]
    generation_token_ids: list[int]

    @property
    def name(self) -> str:
        return f"assistant turn {self.number} (messages[{self.index}])"


def last_token_turn(messages: Sequence[Any]) -> TokenTurn | None:
    """The last assistant message with token data, checked to be lists of token IDs; None when there is none."""
    found: tuple[int, JSON] | None = None
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "assistant" and _has_tokens(message):
            found = (index, message)
            break
    if found is None:
        return None
    index, message = found
    number = sum(1 for m in messages[: index + 1] if isinstance(m, dict) and m.get("role") == "assistant")
    prompt = _token_ids(message, "prompt_token_ids", index)
    generation = _token_ids(message, "generation_token_ids", index)
    if not prompt:
        raise SpliceError(f"messages[{index}].prompt_token_ids is empty; a model turn always has a prompt")
    return TokenTurn(index, number, prompt, generation)


def render_messages(messages: Sequence[Any], turn: TokenTurn | None, marker: str = SPLICE_MARKERS[0]) -> list[Any]:
    """The messages to render: token data removed (vLLM ignores it, and it is the bulk of a long history), and
    the turn's content replaced by `marker`. Its tool calls are kept with their ids and names (some templates
    name them in tool results) but `{}` as arguments: the model's own text of that turn is never used, and an
    argument that contains the template's closing text (a literal `<|im_end|>`) cannot end the turn early."""
    out: list[Any] = []
    for index, message in enumerate(messages):
        if turn is not None and index == turn.index:
            replaced: JSON = {"role": "assistant", "content": marker}
            if message.get("tool_calls"):
                replaced["tool_calls"] = [_without_arguments(call) for call in message["tool_calls"]]
            out.append(replaced)
        elif isinstance(message, dict) and message.get("role") == "assistant" and _has_tokens(message):
            out.append({key: value for key, value in message.items() if key not in TOKEN_FIELDS})
        else:
            out.append(message)
    return out


def splice_prompt(turn: TokenTurn, rendered: Sequence[int], template: TurnTemplate) -> list[int]:
    """The next prompt: the turn's own tokens, the closing tokens it did not generate, then what `rendered` (the
    conversation as render_messages wrote it, with the generation prompt) has after the turn."""
    searched = template.searched_ids
    at = _find_all(rendered, searched)
    if len(at) != 1:
        found = "not found" if not at else f"found {len(at)} times"
        raise SpliceError(
            f"{turn.name}: the turn's place in the rendered prompt was {found}: the chat template drops or "
            "rewrites this assistant turn's content, so the tokens after it cannot be cut exactly at its content"
        )
    after_marker = at[0] + len(searched)
    closing = template.closing_ids
    ends = _find_all(rendered, closing, start=after_marker, first_only=True)
    if not ends:
        raise SpliceError(
            f"{turn.name}: the chat template's end-of-turn tokens {list(closing)} do not follow the turn in the "
            "rendered prompt: it ends this turn otherwise than a plain answer, so the tokens after it cannot be cut "
            "exactly"
        )
    return _joined(turn, closing, rendered[ends[0] + len(closing) :])


def splice_at_prefix(
    turn: TokenTurn, rendered: Sequence[int], prefix: Sequence[int], template: TurnTemplate
) -> list[int]:
    """The next prompt when the turn's content is not in `rendered` (the template drops it): `prefix` is the render
    of the same messages up to and including the turn, without the generation prompt. The full render must begin
    with it (the template writes earlier turns the same whatever follows them), and it must end with the
    template's closing; the turn ends there."""
    ending = template.ending_ids
    if ending and tuple(prefix[-len(ending) :]) == ending:
        prefix = prefix[: -len(ending)]  # written only after the last message
    size = len(prefix)
    if not size or list(rendered[:size]) != list(prefix):
        raise SpliceError(
            f"{turn.name}: the chat template writes the conversation up to this turn differently once later "
            "messages follow it, so the turn's end cannot be found by comparing renders either"
        )
    closing = template.closing_ids
    if tuple(prefix[-len(closing) :]) != closing:
        raise SpliceError(
            f"{turn.name}: the chat template ends this turn with other tokens than a plain answer's "
            f"{list(closing)}, so the closing the model did not generate is not known"
        )
    return _joined(turn, closing, rendered[size:])


def _joined(turn: TokenTurn, closing: Sequence[int], suffix: Sequence[int]) -> list[int]:
    generated = turn.generation_token_ids
    owed = closing[_overlap(generated, closing) :]
    return [*turn.prompt_token_ids, *generated, *owed, *suffix]


def _without_arguments(call: Any) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    return {**call, "function": {**call["function"], "arguments": "{}"}}


def _overlap(generated: Sequence[int], closing: Sequence[int]) -> int:
    """How many leading closing tokens the generation already ends with (1 when it stopped on end-of-turn)."""
    for size in range(min(len(generated), len(closing)), 0, -1):
        if list(generated[-size:]) == list(closing[:size]):
            return size
    return 0


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return size


def _find_all(haystack: Sequence[int], needle: Sequence[int], start: int = 0, first_only: bool = False) -> list[int]:
    if not needle:
        return []
    wanted = list(needle)
    first = wanted[0]
    size = len(wanted)
    last_start = len(haystack) - size
    found: list[int] = []
    position = start
    items = haystack if isinstance(haystack, list) else list(haystack)
    while position <= last_start:
        try:
            position = items.index(first, position, last_start + 1)
        except ValueError:
            break
        if items[position : position + size] == wanted:
            found.append(position)
            if first_only:
                break
        position += 1
    return found


def _has_tokens(message: JSON) -> bool:
    return message.get("prompt_token_ids") is not None or message.get("generation_token_ids") is not None


def _token_ids(message: JSON, field: str, index: int) -> list[int]:
    value = message.get(field)
    # map/set/min run at C speed: a long history's IDs are checked in microseconds. (type() is exact: no bools.)
    if type(value) is not list or not set(map(type, value)) <= {int} or (value and min(value) < 0):
        raise SpliceError(f"messages[{index}].{field} must be a list of token IDs (non-negative integers)")
    return value
