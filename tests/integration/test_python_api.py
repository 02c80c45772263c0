"""The Python API for trainers (ngym.api): the seed's tasks give the same rows as ng_collect_rollouts; 2,000
rollouts in flight at once with no stall; a slow consumer holds back new rollouts; bad rows are named before
anything starts; the docs' GRPO step runs. vLLM is the scripted stand-in."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ngym.api import Gym
from ngym.config.errors import ConfigError
from ngym.http.app import serve_in_background
from resources_servers.simple_weather.app import weather_description
from testkit.gym_process import SEED_CONFIG_PATHS, console_script
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "resources_servers/simple_weather/data/example.jsonl"
AGENT = "simple_weather_simple_agent"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinServer]:
    script = StandinScript(tool_call_mode=True, tool_answer_text=f"Sure: {weather_description('SF')}")
    with StandinServer(script) as server:
        yield server


def env(standin: StandinServer) -> list[str]:
    return [
        f"++policy_base_url={standin.base_url}",
        "++policy_api_key=none",
        f"++policy_model_name={standin.script.model}",
    ]


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def comparable(row: dict[str, Any]) -> tuple[Any, ...]:
    """What must be equal between two collections of the same tasks (ids and timings aside)."""
    items = [(item["type"], item.get("name"), item.get("arguments")) for item in row["response"]["output"]]
    return row["_ng_task_index"], row["_ng_rollout_index"], row["agent_ref"]["name"], row["reward"], tuple(items)


async def test_the_api_gives_the_rows_the_cli_gives(standin: StandinServer, tmp_path: Path) -> None:
    async with Gym.start(config_paths=SEED_CONFIG_PATHS, overrides=env(standin)) as gym:
        assert list(gym.agent_urls) == [AGENT]
        outcomes = [o async for o in gym.collect(rows_of(EXAMPLE), agent_name=AGENT, num_repeats=2)]
        output = tmp_path / "cli.jsonl"
        command = [console_script("ng_collect_rollouts"), f"+agent_name={AGENT}", f"+input_jsonl_fpath={EXAMPLE}",
                   f"+output_jsonl_fpath={output}", "+num_repeats=2", f"+head_server.port={gym.head_port}"]  # fmt: skip
        cli = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert cli.returncode == 0, cli.stderr
    assert all(outcome.ok for outcome in outcomes)
    api_rows = sorted(comparable(o.row) for o in outcomes if o.row is not None)
    assert api_rows == sorted(comparable(row) for row in rows_of(output))
    assert len(api_rows) == 2 * len(rows_of(EXAMPLE))


class HoldingAgent:
    """An agent whose /run answers only once `release_at` rollouts are waiting at once (or at once, if None)."""

    def __init__(self, release_at: int | None) -> None:
        self.release_at = release_at
        self.waiting = 0
        self.most_at_once = 0
        self.received = 0
        self.answered = 0
        self.released = asyncio.Event()
        if release_at is None:
            self.released.set()

    async def run(self, request: Request) -> Response:
        row = orjson.loads(await request.body())
        self.received += 1
        self.waiting += 1
        self.most_at_once = max(self.most_at_once, self.waiting)
        if self.release_at is not None and self.waiting >= self.release_at:
            self.released.set()
        await self.released.wait()
        self.waiting -= 1
        self.answered += 1
        return Response(orjson.dumps({**row, "reward": 1.0, "response": {"output": []}}), media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/run", self.run, methods=["POST"])])


def distinct_rows(count: int) -> list[dict[str, Any]]:
    return [{"responses_create_params": {"input": f"task {i}"}, "task_id": i} for i in range(count)]


@pytest.fixture
async def holding_agent(request: pytest.FixtureRequest) -> AsyncIterator[tuple[HoldingAgent, str]]:
    agent = HoldingAgent(request.param)
    async with serve_in_background(agent.app()) as url:
        yield agent, url


@pytest.mark.parametrize("holding_agent", [2000], indirect=True)
async def test_2000_rollouts_in_flight_at_once_with_no_stall(holding_agent: tuple[HoldingAgent, str]) -> None:
    """The agent answers nothing until 2,000 rollouts wait at once: any cap below that would hang here."""
    agent, url = holding_agent
    gym = Gym({"a": url})
    outcomes = gym.collect(distinct_rows(2000), agent_name="a", max_in_flight=2000)
    done = await asyncio.wait_for(_all(outcomes), timeout=300)  # a hang guard, not a timing assertion
    assert len(done) == 2000 and all(o.ok for o in done)
    assert agent.most_at_once == 2000
    assert sorted(o.task.task_index for o in done) == list(range(2000))


@pytest.mark.parametrize("holding_agent", [None], indirect=True)
async def test_a_consumer_that_stops_taking_outcomes_holds_back_new_rollouts(
    holding_agent: tuple[HoldingAgent, str],
) -> None:
    agent, url = holding_agent
    outcomes = Gym({"a": url}).collect(distinct_rows(100), agent_name="a", max_in_flight=5)
    first = await anext(outcomes)
    assert first.ok
    # The state: every rollout the engine started has been answered. Had slots been given back before their
    # outcomes were taken, the answers would have started more by now; a few hundred loop steps let any such
    # request arrive (the agent runs on this loop).
    while agent.answered < agent.received:
        await asyncio.sleep(0)
    for _ in range(500):
        await asyncio.sleep(0)
    assert agent.received <= 5 + 1
    rest = await _all(outcomes)
    assert 1 + len(rest) == 100


@pytest.mark.parametrize("holding_agent", [None], indirect=True)
async def test_bad_rows_are_named_before_any_rollout_starts(holding_agent: tuple[HoldingAgent, str]) -> None:
    agent, url = holding_agent
    rows = distinct_rows(3)
    del rows[1]["responses_create_params"]
    with pytest.raises(ConfigError, match=r"rows:2: the row has no 'responses_create_params' object"):
        await _all(Gym({"a": url}).collect(rows, agent_name="a"))
    with pytest.raises(ConfigError, match=r"the agent 'b', which is not running"):
        await _all(Gym({"a": url}).collect(distinct_rows(3), agent_name="b"))
    assert agent.received == 0


async def test_the_docs_grpo_step(standin: StandinServer) -> None:
    from docs.examples.grpo_step import grpo_step  # the example, as the docs show it

    tasks = [{**row, "agent_ref": {"type": "responses_api_agents", "name": AGENT}} for row in rows_of(EXAMPLE)]
    async with Gym.start(config_paths=SEED_CONFIG_PATHS, overrides=env(standin)) as gym:
        batch = await grpo_step(gym, copy.deepcopy(tasks), k=3)
    assert len(batch) == 3 * len(tasks)
    by_task: dict[int, list[float]] = {}
    for row, advantage in batch:
        by_task.setdefault(row["_ng_task_index"], []).append(advantage)
    assert all(len(advs) == 3 and abs(sum(advs)) < 1e-6 for advs in by_task.values()), "advantages centre on 0"


async def _all(outcomes: AsyncIterator[Any]) -> list[Any]:
    return [outcome async for outcome in outcomes]


async def test_a_foreign_gym_on_the_head_port_is_never_taken_for_the_one_started(
    standin: StandinServer,
) -> None:
    """Another gym answers /health, ready, on the head port: Gym.start used to hand it to the caller while its own
    ng_run died on the taken port. Now the child must prove it is the one answering (its pid)."""

    async def health(_request: Request) -> Response:
        return Response(orjson.dumps({"status": "ok", "ready": True, "pid": 1}), media_type="application/json")

    foreign = Starlette(routes=[Route("/health", health, methods=["GET"])])
    async with serve_in_background(foreign) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(ConfigError, match=rf"head port {port} is held by another gym \(ng_run pid 1\)"):
            async with Gym.start(
                config_paths=SEED_CONFIG_PATHS, overrides=[*env(standin), f"++head_server.port={port}"]
            ):
                pytest.fail("the foreign gym was taken for the one started")
