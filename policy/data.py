"""Synthetic simple_weather conversations, shaped exactly as the agent loop sends them to vLLM.

A conversation is the list of Chat Completions messages (and the tools) that vLLM's chat template sees on the
agent's second model call: [system/developer], user question, assistant tool call, tool result, assistant answer.
"""

from __future__ import annotations

import ast
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy.cities import ALIASES, HELDOUT_CITIES, TRAIN_CITIES, invented_city, random_letters

ROOT = Path(__file__).resolve().parent.parent
WEATHER_APP = ROOT / "resources_servers" / "simple_weather" / "app.py"
EXAMPLE_JSONL = ROOT / "resources_servers" / "simple_weather" / "data" / "example.jsonl"
HELDOUT_JSONL = ROOT / "resources_servers" / "simple_weather" / "data" / "heldout.jsonl"

Message = dict[str, Any]

# {c} is where the city goes; the first five are example.jsonl's phrasings.
QUESTIONS: tuple[str, ...] = (
    "what's it like in {c}?",
    "going out in {c} tonight, how's the weather?",
    "weather in {c} please",
    "is it raining in {c}?",
    "humidity in {c}",
    "What's the weather in {c}?",
    "what is the weather like in {c} today?",
    "How's the weather in {c}?",
    "Is it sunny in {c} right now?",
    "Do I need an umbrella in {c}?",
    "Should I bring a jacket to {c}?",
    "Tell me the weather for {c}.",
    "Can you check the weather in {c} for me?",
    "{c} weather",
    "weather {c}",
    "{c}?",
    "What's the forecast for {c}?",
    "I'm flying to {c} tomorrow. What's the weather like there?",
    "Is it cold in {c}?",
    "how hot is it in {c}",
    "current conditions in {c}",
    "Hi! Could you tell me what the weather is in {c}?",
    "hey, is it windy in {c}",
    "What's the temperature in {c} right now?",
    "I'm visiting {c} this weekend, what should I expect weather-wise?",
    "Please look up the weather in {c}.",
    "any snow in {c}?",
    "Is it foggy in {c} this morning?",
    "weather report for {c}",
    "How's it looking outside in {c}?",
    "what's the weather doing in {c}",
    "Planning a picnic in {c}. Is the weather nice?",
    "need the weather for {c} asap",
    "Give me the current weather in {c}, please.",
    "My friend lives in {c}. How's the weather there?",
    "Is today a good day for a walk in {c}?",
    "in {c}, is it raining?",
    "Check {c} weather for me",
    "weather check: {c}",
    "Thinking of going for a run in {c}. What's it like out?",
    "is the weather in {c} nice today",
    "How cloudy is it in {c}?",
    "WHAT'S THE WEATHER IN {c}?",
    "yo what's the weather in {c}",
    "Could you find out how the weather is in {c}?",
    "We land in {c} tonight; how's the weather?",
    "what's the weather like over in {c} at the moment?",
    "Is it warm enough for shorts in {c}?",
)

SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "You are a weather assistant. Use the tools to answer.",
    "Answer the user's questions. Be brief.",
    "You are a friendly assistant that helps people plan their day.",
)

# Each answer contains the tool's weather_description verbatim ({d}), as the verifier requires.
ANSWERS: tuple[str, ...] = (
    "{d}",
    "{d}",
    "{d}",
    "Here is the current weather: {d}",
    "I checked for you. {d}",
    "{d} Let me know if you need anything else.",
)


def load_weather_functions() -> tuple[Callable[[str], str], Callable[[str], str], tuple[str, ...]]:
    """simple_weather's own weather_description, normalize_city and CONDITIONS, taken from its app.py.

    The app module imports ngym (orjson, starlette...), which the vLLM venv lacks, so only the module-level
    constants and these two functions are compiled, from the server's source, not copied here.
    """
    tree = ast.parse(WEATHER_APP.read_text())
    keep = {"CONDITIONS", "CITY_ALIASES", "normalize_city", "weather_description"}
    body: list[ast.stmt] = [ast.parse("import zlib").body[0]]
    for node in tree.body:
        wanted_function = isinstance(node, ast.FunctionDef) and node.name in keep
        wanted_constant = isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in keep for t in node.targets
        )
        if wanted_function or wanted_constant:
            body.append(node)
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(WEATHER_APP), "exec"), namespace)
    return namespace["weather_description"], namespace["normalize_city"], tuple(namespace["CONDITIONS"])


weather_description, normalize_city, CONDITIONS = load_weather_functions()


@dataclass(frozen=True)
class Example:
    """example.jsonl's developer prompt and tool (in the Responses API's flat tool format)."""

    developer_prompt: str
    tool: dict[str, Any]


def load_example() -> Example:
    row = json.loads(EXAMPLE_JSONL.read_text().splitlines()[0])
    params = row["responses_create_params"]
    developer = next(item["content"] for item in params["input"] if item.get("role") == "developer")
    return Example(developer_prompt=developer, tool=params["tools"][0])


def chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A Responses tool as vLLM hands it to the chat template: the model server drops `strict`, and vLLM's
    FunctionDefinition fills an absent description with None."""
    return {
        "type": "function",
        "function": {
            "name": tool["name"],
            "description": tool.get("description"),
            "parameters": tool.get("parameters"),
        },
    }


def tool_variants(example: Example) -> list[dict[str, Any]]:
    """example.jsonl's tool, and versions of it without descriptions or with other wordings."""
    base = example.tool
    params = base["parameters"]
    bare_city = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return [
        base,
        {**base, "description": "Look up the weather in a city."},
        {key: value for key, value in base.items() if key != "description"},
        {"type": "function", "name": "get_weather", "parameters": bare_city},
        {**base, "parameters": {**params, "properties": {"city": {"type": "string"}}}},
        {"type": "function", "name": "get_weather", "description": "Get the weather.", "parameters": bare_city},
    ]


def surface_form(city: str, rng: random.Random) -> str:
    """How a user might type the city: as listed, lower case, or (rarely) upper case."""
    roll = rng.random()
    if roll < 0.6:
        return city
    if roll < 0.93:
        return city.lower()
    return city.upper()


def question(city: str, rng: random.Random) -> str:
    return rng.choice(QUESTIONS).format(c=city)


def training_city(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(TRAIN_CITIES)
    if roll < 0.42:
        return rng.choice(ALIASES)
    if roll < 0.71:
        return invented_city(rng)
    return random_letters(rng)


def system_messages(example: Example, rng: random.Random) -> list[Message]:
    roll = rng.random()
    if roll < 0.5:
        return [{"role": "developer", "content": example.developer_prompt}]
    if roll < 0.7:
        return []
    return [{"role": rng.choice(("system", "developer")), "content": rng.choice(SYSTEM_PROMPTS)}]


def conversation(user_messages: list[Message], city: str, call_id: str, answer: str) -> list[Message]:
    """The full exchange for a question about `city`, as vLLM receives it on the agent's second call."""
    description = weather_description(city)
    arguments = json.dumps({"city": city}, ensure_ascii=False)  # as vLLM's hermes parser re-serialises them
    # The body simple_weather returns (orjson: compact, UTF-8).
    output = json.dumps({"city": city, "weather_description": description}, ensure_ascii=False, separators=(",", ":"))
    return [
        *user_messages,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": output},
        {"role": "assistant", "content": answer.format(d=description)},
    ]


@dataclass(frozen=True)
class Sample:
    messages: list[Message]
    tools: list[dict[str, Any]]
    city: str


def training_samples(count: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    example = load_example()
    tools = tool_variants(example)
    samples = []
    for _ in range(count):
        city = surface_form(training_city(rng), rng)
        prompt = [*system_messages(example, rng), {"role": "user", "content": question(city, rng)}]
        call_id = f"chatcmpl-tool-{rng.getrandbits(64):016x}"
        tool = tools[0] if rng.random() < 0.5 else rng.choice(tools)
        messages = conversation(prompt, city, call_id, rng.choice(ANSWERS))
        samples.append(Sample(messages=messages, tools=[chat_tool(tool)], city=city))
    return samples


def heldout_rows(seed: int) -> list[dict[str, Any]]:
    """One example.jsonl-style row per held-out city, with example.jsonl's developer prompt and tool."""
    rng = random.Random(seed)
    example = load_example()
    rows = []
    for name in HELDOUT_CITIES:
        city = surface_form(name, rng)
        inputs = [
            {"role": "developer", "content": example.developer_prompt},
            {"role": "user", "content": question(city, rng)},
        ]
        rows.append({"responses_create_params": {"input": inputs, "tools": [example.tool]}, "expected_city": city})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
