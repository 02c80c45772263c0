"""simple_weather: one tool, get_weather(city), and a verifier that checks the tool was used and reported."""

from __future__ import annotations

import json
import zlib
from typing import Any

from pydantic import BaseModel

from ngym.servers.resources import ResourcesServer, ResourcesServerConfig, Tool, VerifyRequest

CONDITIONS = ("cold", "sunny", "rainy", "windy", "cloudy", "snowy", "foggy", "warm")
CITY_ALIASES = {
    "sf": "san francisco",
    "nyc": "new york",
    "ny": "new york",
    "la": "los angeles",
    "dc": "washington",
    "washington dc": "washington",
}


class SimpleWeatherConfig(ResourcesServerConfig):
    pass


class GetWeatherRequest(BaseModel):
    city: str


class GetWeatherResponse(BaseModel):
    city: str
    weather_description: str


def normalize_city(city: str) -> str:
    name = " ".join(city.lower().replace(".", "").replace(",", " ").split())
    return CITY_ALIASES.get(name, name)


def weather_description(city: str) -> str:
    condition = CONDITIONS[zlib.crc32(normalize_city(city).encode()) % len(CONDITIONS)]
    return f"The weather in {city} is {condition}."


class SimpleWeather(ResourcesServer[SimpleWeatherConfig]):
    config_model = SimpleWeatherConfig

    def tools(self) -> list[Tool[Any]]:
        return [Tool("get_weather", GetWeatherRequest, self.get_weather)]

    async def get_weather(self, body: GetWeatherRequest, _session_id: str) -> GetWeatherResponse:
        return GetWeatherResponse(city=body.city, weather_description=weather_description(body.city))

    async def verify(self, body: VerifyRequest, _session_id: str) -> dict[str, Any]:
        extra = body.model_extra or {}
        return score_rollout(body.responses_create_params, body.response, extra.get("expected_city"))


def score_rollout(params: dict[str, Any], response: dict[str, Any], expected_city: str | None) -> dict[str, Any]:
    """Reward 1.0 when get_weather was called for the asked-about city and the final answer reports the
    tool's description; 0.0 otherwise, with the reason."""
    calls, outputs = _weather_calls(response.get("output") or [])
    if not calls:
        return _scored(0.0, "the model never called get_weather", None, expected_city)
    called_city = calls[-1]
    wanted = normalize_city(expected_city) if expected_city else None
    if wanted is not None and normalize_city(called_city) != wanted:
        return _scored(
            0.0, f"get_weather was called for {called_city!r}, not {expected_city!r}", called_city, expected_city
        )
    if wanted is None and not _mentioned(called_city, _last_user_text(params)):
        return _scored(
            0.0,
            f"get_weather was called for {called_city!r}, which the user did not ask about",
            called_city,
            expected_city,
        )
    answer = _final_answer(response.get("output") or [])
    description = outputs[-1] if outputs else weather_description(called_city)
    if description.lower() not in answer.lower():
        return _scored(
            0.0, "the final answer does not report the tool's weather description", called_city, expected_city
        )
    return _scored(1.0, "called get_weather for the right city and reported its answer", called_city, expected_city)


def _scored(reward: float, reason: str, called: str | None, expected: str | None) -> dict[str, Any]:
    return {"reward": reward, "reason": reason, "called_city": called, "expected_city": expected}


def _weather_calls(output: list[dict[str, Any]]) -> tuple[list[str], list[str]]:

    cities: list[str] = []
    call_ids: dict[str, str] = {}
    descriptions: list[str] = []
    for item in output:
        if item.get("type") == "function_call" and item.get("name") == "get_weather":
            try:
                city = json.loads(item.get("arguments") or "{}").get("city")
            except (ValueError, AttributeError):
                continue
            if isinstance(city, str):
                cities.append(city)
                call_ids[str(item.get("call_id"))] = city
        elif item.get("type") == "function_call_output" and str(item.get("call_id")) in call_ids:
            try:
                description = json.loads(item.get("output") or "{}").get("weather_description")
            except (ValueError, AttributeError):
                continue
            if isinstance(description, str):
                descriptions.append(description)
    return cities, descriptions


def _final_answer(output: list[dict[str, Any]]) -> str:
    for item in reversed(output):
        if item.get("type") == "message" and item.get("role", "assistant") == "assistant":
            return "".join(part.get("text", "") for part in item.get("content") or [] if isinstance(part, dict))
    return ""


def _last_user_text(params: dict[str, Any]) -> str:
    items = params.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


def _mentioned(city: str, text: str) -> bool:
    """Whether the user's text names the city (whole words; `sf`, `nyc`, ... count as their city)."""
    words = " ".join(text.lower().replace(".", " ").replace(",", " ").replace("?", " ").replace("!", " ").split())
    target = normalize_city(city)
    if f" {target} " in f" {words} ":
        return True
    return any(CITY_ALIASES.get(word) == target for word in words.split())
