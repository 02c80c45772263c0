"""Routing over replicas: each rollout holds one replica of the resources server and of the model server, the
least loaded when it starts; a replica that cannot be reached leaves rotation until it answers /health again. A
resources replica's rollouts fail with it (their sessions live there), as an infrastructure failure; a model
replica's go on on another one (every model call carries the whole history).

Every server runs in this process over real HTTP; vLLM is the scripted stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ngym.http.app import bind_socket, json_response, serve_in_background
from ngym.http.client import HttpClient, UpstreamError
from ngym.placement.directory import DirectoryEntry
from ngym.placement.spec import ServerLaunch
from ngym.servers.resources import SeedSessionRequest
from ngym.upstream.routing import ReplicaRouter
from ngym.vllm.process import free_port
from resources_servers.simple_weather.app import (
    GetWeatherRequest,
    GetWeatherResponse,
    SimpleWeather,
    VerifyRequest,
    weather_description,
)
from responses_api_agents.simple_agent.app import SimpleAgent
from responses_api_models.vllm_model.app import VllmModel
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer
from testkit.tiny_model import SERVED_MODEL_NAME

ROOT = Path(__file__).resolve().parents[2]
ROW = json.loads((ROOT / "resources_servers/simple_weather/data/example.jsonl").read_text().splitlines()[0])
AGENT_SECTION = {
    "entrypoint": "app.py",
    "resources_server": {"type": "resources_servers", "name": "simple_weather"},
    "model_server": {"type": "responses_api_models", "name": "policy_model"},
}


class CountingWeather(SimpleWeather):
    """simple_weather noting the session of each call it serves."""

    calls: list[tuple[str, str]]

    async def seed_session(self, body: SeedSessionRequest, session_id: str) -> dict[str, Any]:
        self.calls.append(("seed_session", session_id))
        return await super().seed_session(body, session_id)

    async def get_weather(self, body: GetWeatherRequest, session_id: str) -> GetWeatherResponse:
        self.calls.append(("get_weather", session_id))
        return await super().get_weather(body, session_id)

    async def verify(self, body: VerifyRequest, session_id: str) -> dict[str, Any]:
        self.calls.append(("verify", session_id))
        return await super().verify(body, session_id)


def weather_replica() -> CountingWeather:
    config = {"simple_weather": {"resources_servers": {"simple_weather": {"entrypoint": "app.py"}}}}
    weather = CountingWeather.from_config(config, "simple_weather")
    weather.calls = []
    return weather


def agent_for(model_urls: list[str], weather_urls: list[str]) -> SimpleAgent:
    launch = ServerLaunch(
        instance="agent",
        server_type="responses_api_agents",
        implementation="simple_agent",
        section=AGENT_SECTION,
        directory={
            "policy_model": DirectoryEntry(
                server_type="responses_api_models", implementation="vllm_model", urls=tuple(model_urls)
            ),
            "simple_weather": DirectoryEntry(
                server_type="resources_servers", implementation="simple_weather", urls=tuple(weather_urls)
            ),
        },
    )
    return SimpleAgent.from_launch(launch)


@contextlib.asynccontextmanager
async def model_server() -> AsyncIterator[str]:
    script = StandinScript(tool_call_mode=True, tool_answer_text=f"Here you go: {weather_description('SF')}")
    async with StandinServer(script) as vllm:
        section = {"entrypoint": "app.py", "base_url": vllm.base_url, "model": SERVED_MODEL_NAME}
        model = VllmModel.from_config(
            {"policy_model": {"responses_api_models": {"vllm_model": section}}}, "policy_model"
        )
        async with serve_in_background(model.app()) as url:
            yield url


async def run_rows(agent_url: str, count: int) -> list[tuple[int, Any]]:
    async with aiohttp.ClientSession() as http:

        async def one() -> tuple[int, Any]:
            async with http.post(agent_url + "/run", json=ROW) as resp:
                return resp.status, await resp.json(content_type=None)

        return await asyncio.gather(*(one() for _ in range(count)))


def sessions_of(weather: CountingWeather) -> dict[str, list[str]]:
    by_session: dict[str, list[str]] = {}
    for route, session in weather.calls:
        by_session.setdefault(session, []).append(route)
    return by_session


async def test_rollouts_spread_over_replicas_and_each_stays_on_one() -> None:
    first, second = weather_replica(), weather_replica()
    async with (
        model_server() as model_url,
        serve_in_background(first.app()) as first_url,
        serve_in_background(second.app()) as second_url,
    ):
        agent = agent_for([model_url], [first_url, second_url])
        async with serve_in_background(agent.app()) as agent_url:
            answers = await run_rows(agent_url, 20)
    assert all(status == 200 for status, _ in answers), answers[:2]
    per_replica = [sessions_of(first), sessions_of(second)]
    assert not set(per_replica[0]) & set(per_replica[1]), "a rollout's calls went to both replicas"
    for sessions in per_replica:
        assert len(sessions) >= 5, "new rollouts were not spread over the replicas"
        for routes in sessions.values():
            assert routes == ["seed_session", "get_weather", "verify"]


async def test_a_replica_that_cannot_be_reached_fails_its_rollouts_then_leaves_rotation() -> None:
    live = weather_replica()
    dead_url = f"http://127.0.0.1:{free_port()}"
    async with model_server() as model_url, serve_in_background(live.app()) as live_url:
        agent = agent_for([model_url], [dead_url, live_url])
        async with serve_in_background(agent.app()) as agent_url:
            # Ties go in rotation from the first replica: the first rollout is sent to the dead one.
            first = await run_rows(agent_url, 1)
            then = await run_rows(agent_url, 10)
    status, body = first[0]
    assert status == 502 and body["error"]["code"] == "tool", body
    assert "cannot connect" in body["error"]["message"]
    assert all(status == 200 for status, _ in then), "the unreachable replica stayed in rotation"
    assert len(sessions_of(live)) == 10


async def test_a_model_replica_that_cannot_be_reached_hands_the_rollout_to_a_live_one() -> None:
    """Every model call carries the whole history, so a rollout whose model replica is gone goes on on another
    one (unlike a resources replica, which holds the rollout's session): no rollout fails for it."""
    weather = weather_replica()
    dead_url = f"http://127.0.0.1:{free_port()}"
    async with model_server() as model_url, serve_in_background(weather.app()) as weather_url:
        agent = agent_for([dead_url, model_url], [weather_url])
        async with serve_in_background(agent.app()) as agent_url:
            # Ties go in rotation from the first replica: the first rollout starts on the dead one.
            answers = await run_rows(agent_url, 4)
    assert [status for status, _ in answers] == [200] * 4, answers[0]
    assert all(body["reward"] == 1.0 for _, body in answers)
    assert not agent.models.replicas[0].healthy and agent.models.replicas[1].healthy


async def test_least_loaded_replica_gets_the_new_rollout_and_a_healthy_one_comes_back() -> None:
    port = free_port()
    async with HttpClient() as http:
        router = ReplicaRouter(["http://127.0.0.1:9", f"http://127.0.0.1:{port}"], http, health_check_interval_s=0.05)
        with router.hold() as a, router.hold() as b, router.hold() as c:
            assert {a.index, b.index} == {0, 1} and c.index in (0, 1)
            held = Counter(r.index for r in (a, b, c))
            with router.hold() as d:
                assert held[d.index] == 1, "the new rollout did not go to the least-loaded replica"
        second = router.replicas[1]
        router.failed(second, UpstreamError(f"http://127.0.0.1:{port}/x", "refused", UpstreamError.CONNECT))
        assert not second.healthy
        router.start()
        try:
            for _ in range(5):
                with router.hold() as replica:
                    assert replica.index == 0
            async with health_server(port):
                while not second.healthy:  # hang guard: the test's timeout
                    await asyncio.sleep(0.05)
        finally:
            await router.stop()
        timed_out = UpstreamError("http://127.0.0.1:9/x", "slow", UpstreamError.TIMEOUT)
        router.failed(router.replicas[0], timed_out)
        assert router.replicas[0].healthy, "a slow answer is not a replica that cannot be reached"


@contextlib.asynccontextmanager
async def health_server(port: int) -> AsyncIterator[None]:
    async def health(_request: Request) -> Response:
        return json_response({"status": "ok"})

    sock = bind_socket("127.0.0.1", port)
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/health", health)]), log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await task
        sock.close()
