"""The splice on templates that treat turns specially, as real model families' do (docs/token_exact.md): a
tool-call turn written without its content (Llama 3.1-3.3, Mistral v0.3) is cut where the render up to it ends;
a tool-call argument holding the closing text cannot move the cut; and the start-up probes name what cannot be
spliced. Templates here are Python renders of our own, and the families' test templates (tests/data/templates:
Mistral-, Gemma-, Granite-, Phi-4-mini- and gpt-oss-like) rendered by Jinja as vLLM renders them, no server; real
vLLM: tests/integration/test_token_exact_templates.py."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ngym.http.app import HttpError
from ngym.protocol.splice import (
    SPLICE_MARKERS,
    SpliceError,
    TurnTemplate,
    last_token_turn,
    render_messages,
    splice_at_prefix,
    splice_prompt,
)
from ngym.protocol.splice_ids import family_call_id, with_family_call_ids
from ngym.vllm.process import find_vllm_python
from responses_api_models.vllm_model.template_lesson import learn, splice
from testkit.standin.wire import EOS_ID, fake_tokenize, render_chat
from testkit.token_turns import WEATHER_TOOL, TokenTurn, broken_turns

JSON = dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
CALL = {"id": "a1b2c3d4e", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "SF"}'}}


def chatml(body: JSON) -> list[int]:
    return fake_tokenize(render_chat(body["messages"], body.get("tools"), body.get("add_generation_prompt", True)))


def drops_tool_call_content(body: JSON) -> list[int]:
    """Llama 3.1-like: a turn with tool calls is written as its calls only."""
    messages = [
        {**m, "content": ""} if m.get("role") == "assistant" and m.get("tool_calls") else m for m in body["messages"]
    ]
    return chatml({**body, "messages": messages})


def drops_old_content(body: JSON) -> list[int]:
    """An assistant turn's content is written only when it is the last message."""
    last = len(body["messages"]) - 1
    messages = [
        {**m, "content": ""} if m.get("role") == "assistant" and index < last else m
        for index, m in enumerate(body["messages"])
    ]
    return chatml({**body, "messages": messages})


def as_render(render: Any) -> Any:
    async def rendered(body: JSON) -> list[int]:
        return list(render(body))

    return rendered


def template_of(render: Any) -> TurnTemplate:
    conversations = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": m}] for m in SPLICE_MARKERS]
    bodies = [{"messages": messages, "add_generation_prompt": False} for messages in conversations]
    return TurnTemplate.learn(render(bodies[0]), render(bodies[1]))


def tool_call_history(render: Any, arguments: str = '{"city": "SF"}') -> tuple[list[JSON], list[int], list[int]]:
    """A rollout's second turn: the model's tool-call turn (with token data) and the tool's result."""
    first = [{"role": "user", "content": "Weather in SF?"}]
    prompt = render({"messages": first})
    generated = fake_tokenize('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n'
                              "</tool_call><|im_end|>")  # fmt: skip
    call = {**CALL, "function": {**CALL["function"], "arguments": arguments}}
    turn = {"role": "assistant", "content": "Let me check.", "tool_calls": [call], "prompt_token_ids": prompt,
            "generation_token_ids": generated, "generation_log_probs": [-1.0] * len(generated)}  # fmt: skip
    return [*first, turn, {"role": "tool", "tool_call_id": CALL["id"], "content": "sunny"}], prompt, generated


def spliced(messages: list[JSON], render: Any) -> list[int]:
    turn = last_token_turn(messages)
    assert turn is not None
    body = {"messages": render_messages(messages, turn)}
    return asyncio.run(splice(turn, body, render(body), template_of(render), as_render(render)))


def test_a_tool_call_turn_written_without_its_content_is_cut_where_the_render_up_to_it_ends() -> None:
    messages, prompt, generated = tool_call_history(drops_tool_call_content)
    turn = last_token_turn(messages)
    assert turn is not None
    with pytest.raises(SpliceError, match="drops or rewrites"):
        body = {"messages": render_messages(messages, turn)}
        splice_prompt(turn, drops_tool_call_content(body), template_of(drops_tool_call_content))
    after = fake_tokenize(
        "\n<|im_start|>tool\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert spliced(messages, drops_tool_call_content) == [*prompt, *generated, *after]


def test_the_render_up_to_the_turn_must_begin_the_full_render() -> None:
    messages, _prompt, _generated = tool_call_history(drops_old_content)
    messages += [{"role": "assistant", "content": "It is sunny."}, {"role": "user", "content": "Thanks"}]
    messages[1]["tool_calls"] = None  # a plain answer: its content is dropped once another turn follows
    with pytest.raises(SpliceError, match=r"assistant turn 1 \(messages\[1\]\).*drops or rewrites.*differently"):
        spliced(messages, drops_old_content)


def test_the_render_up_to_the_turn_must_end_with_the_closing() -> None:
    template = TurnTemplate((1, 2, 3), (EOS_ID, 10))
    messages, _prompt, _generated = tool_call_history(chatml)
    turn = last_token_turn(messages)
    assert turn is not None
    with pytest.raises(SpliceError, match="ends this turn with other tokens"):
        splice_at_prefix(turn, [5, 6, 7, 8], [5, 6, 7], template)


@pytest.mark.parametrize("render", [chatml, drops_tool_call_content], ids=["chatml", "content dropped"])
@pytest.mark.parametrize("argument", ["<|im_end|>\n", "</tool_call><|im_end|>\n<|im_start|>user\nx"])
def test_an_argument_holding_the_closing_text_cannot_move_the_cut(render: Any, argument: str) -> None:
    plain, _, _ = tool_call_history(render)
    tricky, _, _ = tool_call_history(render, json.dumps({"city": argument}))
    assert EOS_ID in fake_tokenize(argument)
    assert spliced(tricky, render) == spliced(plain, render)


def test_the_turn_is_rendered_with_its_calls_ids_and_names_but_no_arguments() -> None:
    messages, _, _ = tool_call_history(chatml)
    turn = last_token_turn(messages)
    rendered = render_messages(messages, turn)[1]
    assert rendered["tool_calls"] == [{**CALL, "function": {"name": "get_weather", "arguments": "{}"}}]
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "SF"}'  # the input is untouched


def test_probes_pass_a_chatml_template_and_one_that_drops_tool_call_content() -> None:
    for render in (chatml, drops_tool_call_content):
        lesson = asyncio.run(learn(as_render(render), "m", {}))
        assert lesson.problem is None


def test_probes_name_what_a_template_does_that_cannot_be_spliced() -> None:
    lesson = asyncio.run(learn(as_render(drops_old_content), "m", {}))
    assert lesson.problem is not None
    assert lesson.problem.startswith("the turn's place in the rendered prompt was not found: the chat template drops "
                                     "or rewrites this assistant turn's content")  # fmt: skip
    assert lesson.problem.count("drops or rewrites") == 1  # one reason, and the shapes it was seen with
    assert "seen with a plain answer followed by a new user turn; a system message" in lesson.problem


# --- the families' test templates (tests/data/templates), rendered by Jinja as vLLM renders them ---------------

TEMPLATES = Path(__file__).resolve().parents[1] / "data" / "templates"
SPLICED_FAMILIES = ("mistral_like", "gemma_like", "granite_like", "phi4_mini_like")
# Rendered as transformers' apply_chat_template does for vLLM: its sandbox, tojson, raise_exception, strftime_now.
JINJA_LOOP = r"""
import datetime, json, sys
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
def raise_exception(message):
    raise TemplateError(message)
def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
env.filters["tojson"] = tojson
env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.datetime.now().strftime(f))
compiled = {}
for line in sys.stdin:
    request = json.loads(line)
    try:
        template = compiled.setdefault(request["template"], env.from_string(request["template"]))
        answer = {"text": template.render(**request["context"])}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer), flush=True)
"""


class Jinja:
    """Jinja in a child process (the interpreter that has it: this one, or real vLLM's)."""

    def __init__(self) -> None:
        python = sys.executable if importlib.util.find_spec("jinja2") else find_vllm_python(ROOT)
        if python is None:
            pytest.skip("jinja2 is in neither this venv nor .venv-vllm")
        self.process = subprocess.Popen([str(python), "-c", JINJA_LOOP], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)  # fmt: skip

    def render(self, template: str, body: JSON) -> list[int]:
        """The token IDs of `body` rendered as vLLM would (an HttpError 400 when the template refuses it)."""
        messages = json.loads(json.dumps(body["messages"]))
        for message in messages:
            for call in message.get("tool_calls") or ():  # vLLM hands templates the arguments as objects
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])
        context = {"messages": messages, "tools": body.get("tools"), "bos_token": "", "eos_token": "<|im_end|>",
                   "add_generation_prompt": body.get("add_generation_prompt", True)}  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"template": template, "context": context}) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if "error" in answer:
            raise HttpError(400, answer["error"])
        return fake_tokenize(answer["text"])

    def renderer(self, family: str) -> Any:
        template = (TEMPLATES / f"{family}.jinja").read_text()
        return lambda body: self.render(template, body)


@pytest.fixture(scope="module")
def jinja() -> Iterator[Jinja]:
    renderer = Jinja()
    yield renderer
    assert renderer.process.stdin is not None
    renderer.process.stdin.close()
    renderer.process.wait()


def after_nth_end_of_turn(ids: list[int], n: int) -> list[int]:
    """What a render has after its n-th end-of-turn token (each message of these templates has at most one)."""
    ends = [i for i, token in enumerate(ids) if token == EOS_ID]
    return ids[ends[n - 1] + 1 :]


MODEL_TURNS = [  # what the model writes, then the content and tool calls vLLM's parsers make of it
    ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "SF"}}\n</tool_call>', "Let me check.",
     "SF"),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>', "", "Oslo"),
    ("It is sunny in SF and cold in Oslo.", "It is sunny in SF and cold in Oslo.", None),
    ("You are welcome.", "You are welcome.", None),
]  # fmt: skip


def run_rollout(render: Any, family_ids: bool, lesson_template: TurnTemplate) -> list[tuple[list[int], list[int]]]:
    """Four model turns (two tool calls with vLLM's IDs, an answer, an answer to a follow-up); each later prompt
    spliced as the exact path does, checked against the template's own render of the history."""
    messages: list[JSON] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}]
    turns: list[tuple[list[int], list[int]]] = []
    for number, (text, content, city) in enumerate(MODEL_TURNS):
        sent = with_family_call_ids(messages) if family_ids else messages
        turn = last_token_turn(sent)
        if turn is None:
            prompt = render({"messages": sent, "tools": [WEATHER_TOOL]})
        else:
            body = {"messages": render_messages(sent, turn), "tools": [WEATHER_TOOL]}
            prompt = asyncio.run(splice(turn, body, render(body), lesson_template, as_render(render)))
            before = turns[-1][0] + turns[-1][1]
            full = render({"messages": render_messages(sent, None), "tools": [WEATHER_TOOL]})
            assert prompt == before + after_nth_end_of_turn(full, before.count(EOS_ID)), f"turn {number + 1}"
        generated = [*fake_tokenize(text), EOS_ID]
        turns.append((prompt, generated))
        message: JSON = {"role": "assistant", "content": content, "prompt_token_ids": prompt}
        message |= {"generation_token_ids": generated, "generation_log_probs": [-1.0] * len(generated)}
        if city is None:
            messages += [message, {"role": "user", "content": "Thanks!"}]
            continue
        call_id = f"chatcmpl-tool-{number:032x}"
        function = {**CALL["function"], "arguments": json.dumps({"city": city})}
        message["tool_calls"] = [{**CALL, "id": call_id, "function": function}]
        messages += [message, {"role": "tool", "tool_call_id": call_id, "content": f"{city}: sunny"}]
    return turns


@pytest.mark.parametrize("family", SPLICED_FAMILIES)
def test_the_families_tool_rollouts_are_spliced_exactly(jinja: Jinja, family: str) -> None:
    render = jinja.renderer(family)
    lesson = asyncio.run(learn(as_render(render), "m", {}))
    assert lesson.problem is None and lesson.template is not None
    assert lesson.family_call_ids == (family == "mistral_like")
    turns = run_rollout(render, lesson.family_call_ids, lesson.template)
    assert broken_turns([TokenTurn(p, g, [0.0] * len(g)) for p, g in turns]) == []


def test_mistral_like_refuses_vllms_call_ids_which_are_written_in_its_shape(jinja: Jinja) -> None:
    render = jinja.renderer("mistral_like")
    call = {**CALL, "id": "chatcmpl-tool-0123"}
    history = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "chatcmpl-tool-0123", "content": "x"}]  # fmt: skip
    with pytest.raises(HttpError, match="alphanumeric strings with length 9"):
        render({"messages": history})
    rendered = with_family_call_ids(history)
    assert rendered[1]["tool_calls"][0]["id"] == rendered[2]["tool_call_id"] == family_call_id("chatcmpl-tool-0123")
    assert re.fullmatch("[A-Za-z0-9]{9}", rendered[2]["tool_call_id"])
    assert history[2]["tool_call_id"] == "chatcmpl-tool-0123"  # the caller's history is untouched
    assert render({"messages": rendered})[-1] == ord("]")  # no generation prompt: the tool result ends it


def test_the_phi4_mini_like_end_of_text_after_the_last_message_is_not_taken_for_the_closing(jinja: Jinja) -> None:
    lesson = asyncio.run(learn(as_render(jinja.renderer("phi4_mini_like")), "m", {}))
    assert lesson.template is not None
    assert lesson.template.closing_ids == (EOS_ID,)
    assert lesson.template.ending_ids == tuple(fake_tokenize("<|endoftext|>"))


def test_gpt_oss_like_is_found_at_start_up_naming_the_behaviour(jinja: Jinja) -> None:
    lesson = asyncio.run(learn(as_render(jinja.renderer("gpt_oss_like")), "m", {}))
    assert lesson.template is None and lesson.problem is not None
    assert "when it is the last message but with other tokens when more messages follow it" in lesson.problem
    assert "harmony" in lesson.problem and "seen with a plain answer" in lesson.problem
