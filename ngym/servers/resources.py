"""Resources servers own an environment: its tools, /seed_session and /verify."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ngym.http.app import HttpError, json_response, read_json_object, validate
from ngym.servers.base import Server, ServerConfig
from ngym.servers.sessions import new_session_id, opened_here, session_id_from, set_session_cookie
from ngym.servers.wire import SeedSessionRequest, VerifyRequest

__all__ = ["CONTROL_ROUTES", "ResourcesServer", "ResourcesServerConfig", "SeedSessionRequest", "Tool", "VerifyRequest"]


class ResourcesServerConfig(ServerConfig):
    pass


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
    """Every body is checked here, before a subclass sees it: /seed_session against `seed_request_model`,
    /verify against `verify_request_model` (subclass either to require fields of your rows), each tool's
    arguments against its declared model. A caller's mistake is a 422 naming the field. A session's state lives
    in the process that seeded it: a call of a session from before a restart is refused (503, `session_lost`)."""

    server_type = "resources_servers"
    config_model: ClassVar[type[ServerConfig]] = ResourcesServerConfig
    seed_request_model: ClassVar[type[SeedSessionRequest]] = SeedSessionRequest
    verify_request_model: ClassVar[type[VerifyRequest]] = VerifyRequest

    def tools(self) -> list[Tool[Any]]:
        return []

    async def seed_session(self, body: SeedSessionRequest, session_id: str) -> dict[str, Any]:
        """Set up per-rollout state; the default keeps none."""
        return {}

    async def verify(self, body: VerifyRequest, session_id: str) -> dict[str, Any]:
        """Score a finished rollout: return at least {"reward": float}; the row, as received, is echoed around it."""
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
        body = validate(self.seed_request_model, await read_json_object(request), "seed_session request")
        session_id = session_id_from(request) or new_session_id()
        result = await self.seed_session(body, session_id)
        response = json_response(result)
        set_session_cookie(response, session_id)
        return response

    async def _verify(self, request: Request) -> Response:
        row = await read_json_object(request)
        body = validate(self.verify_request_model, row, "verify request")
        scored = await self.verify(body, self._session(request))
        return json_response({**row, **scored})

    def _session(self, request: Request) -> str:
        """The request's session; one opened by an earlier process of this replica (it died and was restarted)
        has lost its state: a 503, which fails the rollout as an infrastructure failure to be run again."""
        session_id = session_id_from(request) or ""
        if session_id and not opened_here(session_id):
            raise HttpError(
                503,
                f"session {session_id} was opened by an earlier process of {self.context.instance_name}, which "
                "exited: its state is gone (run the rollout again from /seed_session)",
                code="session_lost",
            )
        return session_id

    def _tool_endpoint(self, tool: Tool[Any]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = validate(tool.body, await read_json_object(request), f"arguments of tool {tool.name}")
            result = await tool.handler(body, self._session(request))
            return json_response(result.model_dump() if isinstance(result, BaseModel) else result)

        return endpoint
