"""The rollout loop spreads rollouts over an agent's replicas, and one that cannot be reached leaves rotation:
the rollout it would have got goes to another replica at once (it never reached the dead one)."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ngym.http.app import serve_in_background
from ngym.http.client import HttpClient
from ngym.rollouts.engine import run_rollouts
from ngym.rollouts.tasks import TaskSource, iter_tasks
from ngym.vllm.process import free_port


def agent(name: str, seen: Counter[str]) -> Starlette:
    async def run(request: Request) -> Response:
        seen[name] += 1
        await asyncio.sleep(0.01)  # keep several in flight, so that load decides where the next one goes
        row = orjson.loads(await request.body())
        return Response(orjson.dumps({**row, "reward": 1.0}), media_type="application/json")

    return Starlette(routes=[Route("/run", run, methods=["POST"])])


def tasks(count: int) -> TaskSource:
    rows = [{"responses_create_params": {"input": f"task {i}"}} for i in range(count)]
    return TaskSource(None, agent_name="a", rows=rows)


async def collect(urls: list[str], count: int) -> list[bool]:
    async with HttpClient() as http:
        outcomes = run_rollouts(http, {"a": urls}, iter_tasks(tasks(count)), 8, asyncio.Event())
        return [outcome.ok async for outcome in outcomes]


async def test_rollouts_spread_over_the_replicas() -> None:
    seen: Counter[str] = Counter()
    async with serve_in_background(agent("one", seen)) as one, serve_in_background(agent("two", seen)) as two:
        assert await collect([one, two], 100) == [True] * 100
    assert seen["one"] + seen["two"] == 100 and min(seen.values()) >= 30


async def test_an_unreachable_replica_leaves_rotation_and_loses_no_rollout() -> None:
    seen: Counter[str] = Counter()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with serve_in_background(agent("alive", seen)) as alive:
        assert await collect([dead, alive], 50) == [True] * 50
    assert seen["alive"] == 50
