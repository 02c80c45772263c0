import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ngym.http.app import serve_in_background
from resources_servers.simple_weather.app import SimpleWeather, score_rollout, weather_description

CONFIG = {"simple_weather": {"resources_servers": {"simple_weather": {"entrypoint": "app.py"}}}}


@pytest.fixture
async def weather_url() -> AsyncIterator[str]:
    server = SimpleWeather.from_config(CONFIG, "simple_weather")
    async with serve_in_background(server.app()) as url:
        yield url


def params(question: str) -> dict[str, Any]:
    return {"input": [{"role": "user", "content": question}]}


def rollout(city: str | None, answer: str) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if city is not None:
        body = {"city": city, "weather_description": weather_description(city)}
        output += [
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": json.dumps({"city": city})},
            {"type": "function_call_output", "call_id": "c1", "output": json.dumps(body)},
        ]
    output.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": answer}]})
    return {"output": output}


async def test_get_weather_tool_and_seed_session(weather_url: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(weather_url + "/get_weather", json={"city": "Paris"}) as resp:
            assert resp.status == 200
            assert await resp.json() == {"city": "Paris", "weather_description": weather_description("Paris")}
        async with http.post(weather_url + "/get_weather", json={"town": "Paris"}) as resp:
            assert resp.status == 422
            assert "city" in (await resp.json())["error"]["message"]
        async with http.post(weather_url + "/seed_session", json={}) as resp:
            assert resp.status == 200 and "ngym_session" in resp.cookies


async def test_verify_echoes_the_row_and_scores_it(weather_url: str) -> None:
    row = {"responses_create_params": params("weather in paris?"), "expected_city": "Paris", "extra": 7}
    answer = f"Here you go: {weather_description('Paris')}"
    async with aiohttp.ClientSession() as http:
        async with http.post(weather_url + "/verify", json={**row, "response": rollout("Paris", answer)}) as resp:
            body = await resp.json()
    assert body["reward"] == 1.0 and body["extra"] == 7 and body["expected_city"] == "Paris"
    assert body["response"]["output"][-1]["type"] == "message"


def test_description_is_deterministic_per_city_and_alias() -> None:
    assert weather_description("SF").endswith(weather_description("san francisco").split(" is ")[1])
    assert weather_description("Paris") == weather_description("Paris")


@pytest.mark.parametrize(
    ("question", "expected", "city", "answer_city", "reward"),
    [
        ("what's it like in sf?", "sf", "San Francisco", "San Francisco", 1.0),
        ("what's it like in sf?", "sf", "sf", "sf", 1.0),
        ("weather in Tokyo", None, "tokyo", "tokyo", 1.0),
        ("weather in Tokyo", None, "Osaka", "Osaka", 0.0),
        ("weather in Tokyo", "Tokyo", "Osaka", "Osaka", 0.0),
        ("weather in Tokyo", "Tokyo", None, None, 0.0),
        ("weather in Tokyo", "Tokyo", "Tokyo", None, 0.0),
    ],
)
def test_reward_rule(
    question: str, expected: str | None, city: str | None, answer_city: str | None, reward: float
) -> None:
    answer = f"Sure. {weather_description(answer_city)}" if answer_city else "I do not know."
    scored = score_rollout(params(question), rollout(city, answer), expected)
    assert scored["reward"] == reward, scored["reason"]
    assert scored["reason"]
