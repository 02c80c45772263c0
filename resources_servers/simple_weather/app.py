"""simple_weather: one tool, get_weather(city), and a verifier that checks the tool was used and reported."""

from __future__ import annotations

import json
import zlib
from typing import Any

from pydantic import BaseModel

from ngym.servers.resources import ResourcesServer, ResourcesServerConfig, Tool, VerifyRequest
from ngym.servers.wire import (
    FunctionCall,
    FunctionCallOutput,
    InputMessage,
    OutputMessage,
    ResponseBody,
    ResponsesCreateParams,
)

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


class WeatherVerifyRequest(VerifyRequest):
    expected_city: str | None = None


class SimpleWeather(ResourcesServer[SimpleWeatherConfig]):
    config_model = SimpleWeatherConfig
    verify_request_model = WeatherVerifyRequest

    def tools(self) -> list[Tool[Any]]:
        return [Tool("get_weather", GetWeatherRequest, self.get_weather)]

    async def get_weather(self, body: GetWeatherRequest, _session_id: str) -> GetWeatherResponse:
        return GetWeatherResponse(city=body.city, weather_description=weather_description(body.city))

    async def verify(self, body: VerifyRequest, _session_id: str) -> dict[str, Any]:
        assert isinstance(body, WeatherVerifyRequest)
        return score(body.responses_create_params, body.response, body.expected_city)


def score_rollout(params: dict[str, Any], response: dict[str, Any], expected_city: str | None) -> dict[str, Any]:
    """score() for plain JSON objects (checked as /verify checks them)."""
    return score(ResponsesCreateParams.model_validate(params), ResponseBody.model_validate(response), expected_city)


def score(params: ResponsesCreateParams, response: ResponseBody, expected_city: str | None) -> dict[str, Any]:
    """Reward 1.0 when get_weather was called for the asked-about city and the final answer reports the
    tool's description; 0.0 otherwise, with the reason."""
    calls, outputs = _weather_calls(response.output)
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
    answer = _final_answer(response.output)
    description = outputs[-1] if outputs else weather_description(called_city)
    if description.lower() not in answer.lower():
        return _scored(
            0.0, "the final answer does not report the tool's weather description", called_city, expected_city
        )
    return _scored(1.0, "called get_weather for the right city and reported its answer", called_city, expected_city)


def _scored(reward: float, reason: str, called: str | None, expected: str | None) -> dict[str, Any]:
    return {"reward": reward, "reason": reason, "called_city": called, "expected_city": expected}


def _weather_calls(output: list[Any]) -> tuple[list[str], list[str]]:
    """The cities get_weather was called for, and the descriptions its answers gave, in order."""
    cities: list[str] = []
    call_ids: dict[str, str] = {}
    descriptions: list[str] = []
    for item in output:
        if isinstance(item, FunctionCall) and item.name == "get_weather":
            city = _json_field(item.arguments, "city")
            if city is not None:
                cities.append(city)
                call_ids[item.call_id] = city
        elif isinstance(item, FunctionCallOutput) and item.call_id in call_ids and isinstance(item.output, str):
            description = _json_field(item.output, "weather_description")
            if description is not None:
                descriptions.append(description)
    return cities, descriptions


def _json_field(text: str, key: str) -> str | None:
    """A string field of a JSON object written by the model or a tool; None when the text is anything else."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def _final_answer(output: list[Any]) -> str:
    for item in reversed(output):
        if isinstance(item, OutputMessage) and item.role == "assistant":
            return "".join(part.text or "" for part in item.content)
    return ""


def _last_user_text(params: ResponsesCreateParams) -> str:
    if isinstance(params.input, str):
        return params.input
    for item in reversed(params.input):
        if isinstance(item, InputMessage) and item.role == "user":
            if isinstance(item.content, str):
                return item.content
            return " ".join(part.text or "" for part in item.content)
    return ""


def _mentioned(city: str, text: str) -> bool:
    """Whether the user's text names the city (whole words; `sf`, `nyc`, ... count as their city)."""
    words = " ".join(text.lower().replace(".", " ").replace(",", " ").replace("?", " ").replace("!", " ").split())
    target = normalize_city(city)
    if f" {target} " in f" {words} ":
        return True
    return any(CITY_ALIASES.get(word) == target for word in words.split())
