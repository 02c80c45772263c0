"""Model servers speak the OpenAI Responses and Chat Completions APIs to their callers."""

from __future__ import annotations

from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ngym.servers.base import Server, ServerConfig

MC = TypeVar("MC", bound=ServerConfig)


class ModelServer(Server[MC]):
    server_type = "responses_api_models"

    async def responses(self, request: Request) -> Response:
        raise NotImplementedError

    async def chat_completions(self, request: Request) -> Response:
        raise NotImplementedError

    async def models(self, request: Request) -> Response:
        raise NotImplementedError

    def routes(self) -> list[BaseRoute]:
        routes = super().routes()
        routes.append(Route("/v1/responses", self.responses, methods=["POST"]))
        routes.append(Route("/v1/chat/completions", self.chat_completions, methods=["POST"]))
        routes.append(Route("/v1/models", self.models, methods=["GET"]))
        return routes
