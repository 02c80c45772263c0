"""`/metrics` on every server, read with prometheus_client's own parser of the exposition format: requests by
route and status class, latency, requests in flight while they are held, a crash and a refused host counted, and
the model server's view of each vLLM server (requests, rotation, turns and tokens by completion path, and
`/vllm_servers` beside vLLM's own metrics; on real vLLM: tests/integration/test_vllm_model_real.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ngym.http.app import serve_in_background
from ngym.observability.vllm_load import VllmLoad, parse_vllm_metrics
from ngym.servers.base import Server, ServerConfig
from ngym.servers.head import HeadState, head_app
from ngym.upstream.pool import UPSTREAM_COOKIE
from resources_servers.simple_weather.app import SimpleWeather
from responses_api_models.vllm_model.app import VllmModel
from testkit.standin.script import DropConnection, Hold, StandinScript
from testkit.standin.server import StandinServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Crashing(Server[ServerConfig]):
    """A server with a route that raises (a bug): the guard answers 500, and the metrics count it."""

    server_type = "resources_servers"

    def routes(self) -> list[BaseRoute]:
        return [*super().routes(), Route("/boom/{what}", self.boom, methods=["POST"])]

    async def boom(self, _request: Request) -> Response:
        raise RuntimeError("a bug")


def section(type_: str, implementation: str, **keys: Any) -> dict[str, Any]:
    return {type_: {implementation: {"entrypoint": "app.py", **keys}}}


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url + "/metrics") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@asynccontextmanager
async def served(server: Server[Any]) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    async with serve_in_background(server.app()) as url, aiohttp.ClientSession() as http:
        yield url, http


async def test_requests_by_route_and_status_class_with_latency() -> None:
    weather = SimpleWeather.from_config({"weather": section("resources_servers", "simple_weather")}, "weather")
    async with served(weather) as (url, http):
        for _ in range(3):
            async with http.post(url + "/get_weather", json={"city": "SF"}) as resp:
                assert resp.status == 200
        async with http.post(url + "/get_weather", json={"town": "SF"}) as resp:
            assert resp.status == 422
        async with http.get(url + "/no/such/route") as resp:
            assert resp.status == 404
        async with http.get(url + "/health", headers={"Host": "evil.example"}) as resp:
            assert resp.status == 403
        samples = await scrape(http, url)
    assert value(samples, "ngym_requests_total", route="/get_weather", status_class="2xx") == 3
    assert value(samples, "ngym_requests_total", route="/get_weather", status_class="4xx") == 1
    # Whatever path a caller sends, what no route serves is one series (the refused host's /health too).
    assert value(samples, "ngym_requests_total", route="unmatched", status_class="4xx") == 1
    assert value(samples, "ngym_requests_total", route="/health", status_class="4xx") == 1
    assert value(samples, "ngym_request_duration_seconds_count", route="/get_weather") == 4
    assert value(samples, "ngym_request_duration_seconds_sum", route="/get_weather") > 0
    assert value(samples, "ngym_requests_in_flight", route="/get_weather") == 0
    assert not any("/no/such/route" in dict(labels).get("route", "") for _name, labels in samples)
    assert any(name == "ngym_server_info" and ("instance", "weather") in labels for name, labels in samples)
    assert value(samples, "process_resident_memory_bytes") > 0


async def test_a_crash_is_a_counted_500_on_its_route_template() -> None:
    crashing = Crashing.from_config({"crash": section("resources_servers", "crashing")}, "crash")
    async with served(crashing) as (url, http):
        for what in ("a", "b"):
            async with http.post(f"{url}/boom/{what}") as resp:
                assert resp.status == 500
        samples = await scrape(http, url)
    assert value(samples, "ngym_requests_total", route="/boom/{what}", status_class="5xx") == 2


async def test_metrics_false_serves_no_metrics() -> None:
    weather = SimpleWeather.from_config(
        {"weather": section("resources_servers", "simple_weather", metrics=False)}, "weather"
    )
    async with served(weather) as (url, http), http.get(url + "/metrics") as resp:
        assert resp.status == 404


def model(base_urls: list[str]) -> VllmModel:
    keys = {"base_url": base_urls, "model": StandinScript().model, "health_check_interval_s": 3600}
    config = {"policy_model": section("responses_api_models", "vllm_model", **keys)}
    return VllmModel.from_config(config, "policy_model")


CHAT = {"messages": [{"role": "user", "content": "Weather in SF?"}]}


async def test_requests_held_at_vllm_are_in_flight_on_the_route_and_on_that_vllm() -> None:
    hold = Hold()
    async with StandinServer(StandinScript()) as vllm:
        vllm.script.inject(hold, hold)
        async with served(model([vllm.base_url])) as (url, http):
            calls = [asyncio.create_task(http.post(url + "/v1/chat/completions", json=CHAT)) for _ in range(2)]
            await asyncio.to_thread(hold.wait_for_held, 2)
            held = await scrape(http, url)
            hold.release()
            for call in calls:
                (await call).release()
            done = await scrape(http, url)
    assert value(held, "ngym_requests_in_flight", route="/v1/chat/completions") == 2
    assert value(held, "ngym_vllm_requests_in_flight", vllm=vllm.base_url) == 2
    assert value(done, "ngym_requests_in_flight", route="/v1/chat/completions") == 0
    assert value(done, "ngym_vllm_requests_in_flight", vllm=vllm.base_url) == 0


async def test_turns_tokens_and_rotation_per_vllm() -> None:
    async with StandinServer(StandinScript()) as first, StandinServer(StandinScript()) as second:
        async with served(model([first.base_url, second.base_url])) as (url, http):
            usage = {"prompt_tokens": 0, "completion_tokens": 0}
            for _ in range(6):  # new sessions: least-loaded placement spreads them over both
                async with http.post(url + "/v1/chat/completions", json=CHAT) as resp:
                    answer = await resp.json()
                    for key in usage:
                        usage[key] += answer["usage"][key]
            first.script.inject(DropConnection())  # a session of first's: first leaves rotation, the call moves
            pinned = {"Cookie": f"{UPSTREAM_COOKIE}=a-session.0"}
            async with http.post(url + "/v1/chat/completions", json=CHAT, headers=pinned) as resp:
                assert resp.status == 200
                usage = {key: count + (await resp.json())["usage"][key] for key, count in usage.items()}
            samples = await scrape(http, url)
    servers = (first.base_url, second.base_url)
    turns = [value(samples, "ngym_vllm_turns_total", vllm=server, path="chat") for server in servers]
    assert sum(turns) == 7 and all(count >= 1 for count in turns)
    assert (
        sum(value(samples, "ngym_vllm_prompt_tokens_total", vllm=s, path="chat") for s in servers)
        == usage["prompt_tokens"]
    )
    assert (
        sum(value(samples, "ngym_vllm_completion_tokens_total", vllm=s, path="chat") for s in servers)
        == usage["completion_tokens"]
    )
    assert value(samples, "ngym_vllm_in_rotation", vllm=second.base_url) == 1
    assert value(samples, "ngym_vllm_in_rotation", vllm=first.base_url) == 0
    assert value(samples, "ngym_vllm_left_rotation_total", vllm=first.base_url) == 1
    assert value(samples, "ngym_vllm_requests_total", vllm=first.base_url) == turns[0] + 1  # the dropped one


@pytest.mark.parametrize("route", ["/v1/responses", "/v1/chat/completions"])
async def test_the_model_server_counts_both_apis(route: str) -> None:
    body = {"input": "Weather in SF?"} if route == "/v1/responses" else CHAT
    async with StandinServer(StandinScript()) as vllm, served(model([vllm.base_url])) as (url, http):
        async with http.post(url + route, json=body) as resp:
            assert resp.status == 200
        samples = await scrape(http, url)
    assert value(samples, "ngym_requests_total", route=route, status_class="2xx") == 1
    assert value(samples, "ngym_vllm_turns_total", vllm=vllm.base_url, path="chat") == 1


# vLLM 0.32's exposition, two engines (data parallel): what parse_vllm_metrics sums, and takes the peak of.
VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 300.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 100.0
# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 0.0
"""


def test_vllms_own_metrics_are_read_with_the_standard_parser() -> None:
    load = parse_vllm_metrics(VLLM_METRICS)
    assert load == VllmLoad(running=5.0, waiting=7.0, kv_cache_usage=0.75, prefix_cache_hit_rate=0.25)
    assert parse_vllm_metrics("") == VllmLoad(None, None, None, None)


async def test_vllm_servers_shows_each_servers_load_and_why_vllms_own_is_missing() -> None:
    hold = Hold()
    async with StandinServer(StandinScript()) as first, StandinServer(StandinScript()) as second:
        async with served(model([first.base_url, second.base_url])) as (url, http):
            first.script.inject(hold)
            pinned = {"Cookie": f"{UPSTREAM_COOKIE}=a-session.0"}
            call = asyncio.create_task(http.post(url + "/v1/chat/completions", json=CHAT, headers=pinned))
            await asyncio.to_thread(hold.wait_for_held, 1)
            async with http.get(url + "/vllm_servers") as resp:
                held = await resp.json()
            hold.release()
            (await call).release()
    assert held["instance"] == "policy_model"
    by_url = {entry["url"]: entry for entry in held["vllm_servers"]}
    assert by_url[first.base_url]["in_flight"] == 1 and by_url[second.base_url]["in_flight"] == 0
    assert by_url[first.base_url]["in_rotation"] is True
    # The stand-in serves no /metrics: vLLM's own view is missing, with the reason.
    assert by_url[first.base_url]["vllm"] is None
    assert by_url[first.base_url]["vllm_unavailable"] == "no /metrics (HTTP 404)"


async def test_the_head_server_serves_metrics_too() -> None:
    async with serve_in_background(head_app({}, HeadState())) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/servers") as resp:
            assert resp.status == 200
        samples = await scrape(http, url)
    assert value(samples, "ngym_requests_total", route="/servers", status_class="2xx") == 1
