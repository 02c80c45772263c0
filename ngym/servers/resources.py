"""Resources servers own an environment: its tools, /seed_session and /verify."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ngym.http.app import json_response, read_json_object, validate
from ngym.servers.base import Server, ServerConfig
from ngym.servers.sessions import new_session_id, session_id_from, set_session_cookie


class ResourcesServerConfig(ServerConfig):
    pass


class VerifyRequest(BaseModel):
    """The task row plus the finished `response`; extra fields of the row are kept and echoed back."""

    model_config = ConfigDict(extra="allow")

    responses_create_params: dict[str, Any]
    response: dict[str, Any]


BodyT = TypeVar("BodyT", bound=BaseModel)


@dataclass(frozen=True)
class Tool(Generic[BodyT]):
    """One tool: POST /<name> with a JSON body validated by `body`; the handler's result is the answer."""

    name: str
    body: type[BodyT]
    handler: Callable[[BodyT, str], Awaitable[BaseModel | dict[str, Any]]]


RC = TypeVar("RC", bound=ResourcesServerConfig)
# Routes of every resources server that are not tools: a model must never reach them by naming a tool so.
CONTROL_ROUTES = frozenset({"seed_session", "verify", "health"})


class ResourcesServer(Server[RC]):
    server_type = "resources_servers"
    config_model: ClassVar[type[ServerConfig]] = ResourcesServerConfig

    def tools(self) -> list[Tool[Any]]:
        return []

    async def seed_session(self, body: dict[str, Any], session_id: str) -> dict[str, Any]:
        """Set up per-rollout state; the default keeps none."""
        return {}

    async def verify(self, body: VerifyRequest, session_id: str) -> dict[str, Any]:
        """Score a finished rollout: return at least {"reward": float}; the row is echoed around it."""
        raise NotImplementedError

    def routes(self) -> list[BaseRoute]:
        routes = super().routes()
        routes.append(Route("/seed_session", self._seed_session, methods=["POST"]))
        routes.append(Route("/verify", self._verify, methods=["POST"]))
        for tool in self.tools():
            if tool.name in CONTROL_ROUTES:
                raise ValueError(f"a tool cannot be named {tool.name!r}: /{tool.name} is a resources server route")
            routes.append(Route(f"/{tool.name}", self._tool_endpoint(tool), methods=["POST"]))
        return routes

    async def _seed_session(self, request: Request) -> Response:
        session_id = session_id_from(request) or new_session_id()
        result = await self.seed_session(await read_json_object(request), session_id)
        response = json_response(result)
        set_session_cookie(response, session_id)
        return response

    async def _verify(self, request: Request) -> Response:
        body = validate(VerifyRequest, await read_json_object(request), "verify request")
        session_id = session_id_from(request) or ""
        scored = await self.verify(body, session_id)
        return json_response({**body.model_dump(), **scored})

    def _tool_endpoint(self, tool: Tool[Any]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = validate(tool.body, await read_json_object(request), f"arguments of tool {tool.name}")
            result = await tool.handler(body, session_id_from(request) or "")
            return json_response(result.model_dump() if isinstance(result, BaseModel) else result)

        return endpoint
