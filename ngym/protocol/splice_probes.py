"""The conversations that start-up splices before any rollout, one per template behaviour that real model families
have: a system message (Gemma folds it into the first user turn, Mistral into the last one), tool-call turns
(Llama 3.1-3.3 and Mistral v0.3 drop their content), several tool results (Qwen groups them in one turn), and
reasoning (Qwen3 and DeepSeek-R1 drop earlier turns' reasoning). Each ends with an assistant turn that carries
(made-up) token data followed by what a rollout sends next, so splicing it exercises exactly what a later turn
of a rollout will. Pure data; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ngym.protocol.shapes import JSON

# Nine alphanumeric characters, as Mistral's templates require of a call ID.
CALL_IDS = ("a1b2c3d4e", "f5g6h7i8j")
PROBE_TOOLS: list[JSON] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@dataclass(frozen=True, slots=True)
class Probe:
    """One conversation to splice; `behaviour` names, for the user, the shape a template may not allow to splice."""

    behaviour: str
    messages: list[JSON]
    tools: bool = False


def _call(call_id: str, city: str) -> JSON:
    arguments = json.dumps({"city": city})
    return {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}


def _result(call_id: str, text: str) -> JSON:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _anchor(content: str = "Sure.", calls: list[JSON] | None = None, reasoning: str | None = None) -> JSON:
    """The turn the splice continues from: the model's own, with token data."""
    message: JSON = {"role": "assistant", "content": content, "prompt_token_ids": [0], "generation_token_ids": [0]}
    message["generation_log_probs"] = [0.0]
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = message["reasoning"] = reasoning
    return message


def _user(text: str) -> JSON:
    return {"role": "user", "content": text}


SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
TOOL_CALL_PROBE = Probe(
    "content dropped on tool-call turns (an assistant turn with a tool call, then its result)",
    [_user("Weather in SF?"), _anchor("Let me check.", [_call(CALL_IDS[0], "SF")]), _result(CALL_IDS[0], "sunny")],
    tools=True,
)
PROBES = (
    Probe("a plain answer followed by a new user turn", [_user("Hi"), _anchor(), _user("And then?")]),
    Probe(
        "a system message before the conversation",
        [SYSTEM, _user("Hi"), _anchor("Hello."), _user("Weather?")],
    ),
    TOOL_CALL_PROBE,
    Probe(
        "several tool results (two tool calls in one turn, then two results)",
        [
            SYSTEM,
            _user("Weather in Oslo and Lima?"),
            _anchor("", [_call(CALL_IDS[0], "Oslo"), _call(CALL_IDS[1], "Lima")]),
            _result(CALL_IDS[0], "cold"),
            _result(CALL_IDS[1], "warm"),
        ],
        tools=True,
    ),
    Probe(
        "reasoning dropped from earlier turns (a turn with reasoning, then a new user turn)",
        [
            _user("Hi"),
            {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet.", "reasoning": "Greet."},
            _user("Weather?"),
            _anchor("Sunny.", reasoning="Answer."),
            _user("Thanks!"),
        ],
    ),
    Probe(
        "a reasoning turn with a tool call after an earlier tool call",
        [
            _user("Weather in SF?"),
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "Check SF.",
                "reasoning": "Check SF.",
                "tool_calls": [_call(CALL_IDS[0], "SF")],
            },
            _result(CALL_IDS[0], "sunny"),
            _anchor("", [_call(CALL_IDS[1], "SF")], reasoning="Check again."),
            _result(CALL_IDS[1], "still sunny"),
        ],
        tools=True,
    ),
)
