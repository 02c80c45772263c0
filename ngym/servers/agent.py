"""Agents run the loop (model call, tool calls, model call, ...) and score it: /v1/responses and /run."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ngym.config.instances import RUN_DIR_KEY
from ngym.http.app import json_response, read_json_object, validate
from ngym.http.cookies import CookieStore
from ngym.observability.tracing import TRACES_KEY, RolloutTracing, TracingUnavailable, traces_directory
from ngym.servers.base import Server, ServerConfig, ServerContext, StartupError
from ngym.servers.wire import ResponsesCreateParams, TaskRow


class AgentConfig(ServerConfig):
    datasets: list[dict[str, Any]] | None = None


AC = TypeVar("AC", bound=AgentConfig)


class Agent(Server[AC]):
    """/v1/responses bodies and /run task rows are checked here (ngym.servers.wire) before a subclass sees them:
    a caller's mistake is a 422 naming the field. Subclasses get the body as received."""

    server_type = "responses_api_agents"
    config_model: ClassVar[type[ServerConfig]] = AgentConfig

    def __init__(self, config: AC, context: ServerContext) -> None:
        super().__init__(config, context)
        self.tracing = RolloutTracing(context.instance_name, None)  # off until open() reads the run's setting

    async def open(self) -> None:
        settings = self.context.config
        directory = traces_directory(settings.get(TRACES_KEY), settings.get(RUN_DIR_KEY))
        try:
            self.tracing = RolloutTracing(self.context.instance_name, directory)
        except TracingUnavailable as exc:
            raise StartupError(str(exc)) from None
        await super().open()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self.tracing.close()

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
        params = await read_json_object(request)
        validate(ResponsesCreateParams, params, "Responses request")
        return json_response(await self.respond(params, CookieStore()))

    async def _run(self, request: Request) -> Response:
        row = await read_json_object(request)
        validate(TaskRow, row, "task row")
        with self.tracing.rollout(request.headers):
            return json_response(await self.run(row))
