"""Checks and drivers for multi-turn token data: does each turn's prompt begin with the previous turn's prompt
and generated IDs? Used by the tests, and by `python -m testkit.token_turns` to measure a running model
server."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from ngym.protocol.shapes import JSON


@dataclass(frozen=True, slots=True)
class TokenTurn:
    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]

    @classmethod
    def of(cls, carrier: JSON) -> TokenTurn:
        return cls(carrier["prompt_token_ids"], carrier["generation_token_ids"], carrier["generation_log_probs"])


def broken_turns(turns: Sequence[TokenTurn]) -> list[int]:
    """Indices of turns whose prompt does not begin with the previous turn's prompt + generated IDs."""
    broken = []
    for index in range(1, len(turns)):
        before = turns[index - 1]
        seen = [*before.prompt_token_ids, *before.generation_token_ids]
        if turns[index].prompt_token_ids[: len(seen)] != seen:
            broken.append(index)
    return broken


def response_turns(output: Sequence[JSON]) -> list[TokenTurn]:
    """The token data of each model turn of a Response's output (it sits on each turn's last item)."""
    return [TokenTurn.of(item) for item in output if "generation_token_ids" in item]


@dataclass
class Conversation:
    """A Chat Completions conversation driven turn by turn through a model server in training mode."""

    messages: list[JSON]
    turns: list[TokenTurn] = field(default_factory=list)
    answers: list[JSON] = field(default_factory=list)

    def add_answer(self, answer: JSON, follow_up: str) -> None:
        message = answer["choices"][0]["message"]
        self.turns.append(TokenTurn.of(message))
        self.answers.append(answer)
        self.messages.append(message)
        calls = message.get("tool_calls") or []
        for call in calls:
            self.messages.append({"role": "tool", "tool_call_id": call["id"], "content": follow_up})
        if not calls:
            self.messages.append({"role": "user", "content": follow_up})


async def run_chat_conversation(
    http: aiohttp.ClientSession,
    url: str,
    first: list[JSON],
    turns: int,
    fields: JSON | Sequence[JSON],
    follow_ups: Sequence[str],
) -> Conversation:
    """`turns` model turns through `url`/v1/chat/completions; each answer goes back as history, followed by a
    tool result for each of its calls or a user message (from `follow_ups`). `fields` are the request's other
    fields, one set for all turns or one per turn."""
    conversation = Conversation(list(first))
    for turn in range(turns):
        answer = await _turn(http, url + "/v1/chat/completions", {"messages": conversation.messages}, fields, turn)
        conversation.add_answer(answer, follow_ups[turn % len(follow_ups)])
    return conversation


async def _turn(http: aiohttp.ClientSession, url: str, body: JSON, fields: JSON | Sequence[JSON], turn: int) -> JSON:
    extra = fields[turn] if isinstance(fields, Sequence) else fields
    async with http.post(url, json={**body, **extra}) as resp:
        answer: JSON = await resp.json()
        if resp.status != 200:
            raise AssertionError(f"turn {turn + 1}: HTTP {resp.status}: {answer}")
    return answer


async def run_responses_conversation(
    http: aiohttp.ClientSession,
    url: str,
    first: list[JSON],
    turns: int,
    fields: JSON | Sequence[JSON],
    follow_ups: Sequence[str],
) -> list[JSON]:
    """As run_chat_conversation, through `url`/v1/responses: each answer's output items go back as input,
    followed by a function_call_output for each call or a user message. Returns the whole history."""
    history = list(first)
    for turn in range(turns):
        answer = await _turn(http, url + "/v1/responses", {"input": history}, fields, turn)
        history += answer["output"]
        follow_up = follow_ups[turn % len(follow_ups)]
        calls = [item for item in answer["output"] if item["type"] == "function_call"]
        history += [{"type": "function_call_output", "call_id": c["call_id"], "output": follow_up} for c in calls]
        if not calls:
            history.append({"role": "user", "content": follow_up})
    return history


QUESTIONS = (
    "What is the weather in Paris?",
    "Tell me about the weather in São Paulo, please.",
    "weather in New York City?",
    "Is it raining in Tokyo right now?",
    "Hi! How are you today?",
)
FOLLOW_UPS = ("And tomorrow?", "  thanks!\n\n", '{"city": "Oslo", "weather": "sunny"}', "Why?")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def measure(
    url: str, conversations: int, turns: int, max_tokens: int, temperature: float, parallel: int = 8
) -> tuple[int, int]:
    """(conversations whose every turn's prompt began with the previous turn's tokens, conversations run)."""
    rng = random.Random(0)
    gate = asyncio.Semaphore(parallel)

    async def one(http: aiohttp.ClientSession, index: int, follow: list[str]) -> bool:
        first = [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}]
        fields: JSON = {"max_tokens": max_tokens, "temperature": temperature}
        if index % 2 == 0:
            fields["tools"] = [WEATHER_TOOL]
        async with gate:
            conversation = await run_chat_conversation(http, url, first, turns, fields, follow)
        return not broken_turns(conversation.turns)

    async with aiohttp.ClientSession() as http:
        follow_ups = [rng.sample(FOLLOW_UPS, len(FOLLOW_UPS)) for _ in range(conversations)]
        results = await asyncio.gather(*(one(http, i, follow_ups[i]) for i in range(conversations)))
    return sum(results), conversations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="a vllm_model server in training mode, e.g. http://127.0.0.1:8001")
    parser.add_argument("--conversations", type=int, default=30)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args(argv)
    exact, total = asyncio.run(measure(args.url, args.conversations, args.turns, args.max_tokens, args.temperature))
    print(json.dumps({"exact_conversations": exact, "conversations": total, "turns": args.turns}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
