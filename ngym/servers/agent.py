"""Agents run the loop (model call, tool calls, model call, ...) and score it: /v1/responses and /run."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ngym.http.app import HttpError, json_response, read_json_object
from ngym.http.cookies import CookieStore
from ngym.servers.base import Server, ServerConfig


class AgentConfig(ServerConfig):
    datasets: list[dict[str, Any]] | None = None


AC = TypeVar("AC", bound=AgentConfig)


class Agent(Server[AC]):
    server_type = "responses_api_agents"
    config_model: ClassVar[type[ServerConfig]] = AgentConfig

    async def respond(self, params: dict[str, Any], cookies: CookieStore) -> dict[str, Any]:
        """Run the loop for one Responses request; return the final Response with every turn's output."""
        raise NotImplementedError

    async def run(self, row: dict[str, Any]) -> dict[str, Any]:
        """Seed, loop, verify one task row; return the verify body (row + response + reward + extras)."""
        raise NotImplementedError

    def routes(self) -> list[BaseRoute]:
        routes = super().routes()
        routes.append(Route("/v1/responses", self._responses, methods=["POST"]))
        routes.append(Route("/run", self._run, methods=["POST"]))
        return routes

    async def _responses(self, request: Request) -> Response:
        return json_response(await self.respond(await read_json_object(request), CookieStore()))

    async def _run(self, request: Request) -> Response:
        row = await read_json_object(request)
        if not isinstance(row.get("responses_create_params"), dict):
            raise HttpError(422, "task row needs a 'responses_create_params' object", param="responses_create_params")
        return json_response(await self.run(row))
