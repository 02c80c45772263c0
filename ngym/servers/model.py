"""Model servers speak the OpenAI Responses and Chat Completions APIs to their callers. A request that cannot be
converted (ngym.protocol's ConversionError, raised anywhere while answering) is the caller's 422, naming the field."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ngym.http.app import HttpError
from ngym.http.guard import ErrorAnswers
from ngym.protocol.errors import ConversionError
from ngym.servers.base import Server, ServerConfig

MC = TypeVar("MC", bound=ServerConfig)


def _caller_error(exc: Exception) -> HttpError:
    assert isinstance(exc, ConversionError)
    return HttpError(422, str(exc), param=exc.param)


class ModelServer(Server[MC]):
    server_type = "responses_api_models"
    error_answers: ClassVar[ErrorAnswers] = {ConversionError: _caller_error}

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
