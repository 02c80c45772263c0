"""Serving a NeMo Gym server on ngym and calling other servers by name.

`SimpleServer.run_webserver()` builds the server from its section of the run's configuration, adds NeMo Gym's
liveness routes and exception handling to the FastAPI app `setup_webserver()` returns, and serves it on the
socket ng_run bound (a server that uses Ray gets a local one first, on loopback: `_ray_local`).
`ServerClient.post(server_name=..., url_path=...)` reaches any instance of the run by name
(aiohttp, NeMo Gym's client, so `raise_for_status` and `get_response_json` take its responses).
"""

from __future__ import annotations

import asyncio
import traceback
from abc import abstractmethod
from typing import Any, ClassVar
from uuid import uuid4

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, PrivateAttr

from ._ray_local import initialize_ray, server_uses_ray
from ._runtime import current, installed
from .config_types import (
    ROLLOUT_PATH_PREFIX,
    TOKEN_CAPTURE_PATH_SEGMENT,
    BaseRunServerInstanceConfig,
    BaseServerConfig,
)
from .global_config import get_first_server_config_dict

__all__ = [
    "SESSION_ID_KEY",
    "BaseServer",
    "ServerClient",
    "SimpleServer",
    "apply_rollout_prefix",
    "get_first_server_config_dict",
    "get_response_json",
    "get_server_url",
    "initialize_ray",
    "raise_for_status",
    "request",
    "rollout_path_prefix",
]

SESSION_ID_KEY = "session_id"
MAX_NUM_TRIES = 3


class _Clients:
    """The process's aiohttp session (NeMo Gym keeps one per process), made in the loop that needs it (again when
    code of the environment's runs requests in an event loop of its own)."""

    session: aiohttp.ClientSession | None = None
    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if cls.session is None or cls.session.closed or cls.loop is not loop:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
            cls.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
            cls.loop = loop
        return cls.session


async def request(method: str, url: str, _internal: bool = False, **kwargs: Any) -> aiohttp.ClientResponse:
    """One HTTP request on the process's client; dropped connections are retried a few times."""
    for attempt in range(1, MAX_NUM_TRIES + 1):
        try:
            return await _Clients.get().request(method=method, url=url, **kwargs)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            if attempt == MAX_NUM_TRIES:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def raise_for_status(response: aiohttp.ClientResponse, content: bytes | None = None) -> None:
    """aiohttp's raise_for_status, with the answer's body kept on the error as `response_content`."""
    if response.ok:
        return
    body = content if content is not None else await response.read()
    try:
        response.raise_for_status()
    except aiohttp.ClientResponseError as error:
        error.response_content = body  # type: ignore[attr-defined]
        raise


async def get_response_json(response: aiohttp.ClientResponse) -> Any:
    return orjson.loads(await response.read())


def get_server_url(server_name: str) -> str:
    return ServerClient()._resolve_base_url(server_name)


def rollout_path_prefix(rollout_id: str | None, *, token_capture: bool = False) -> str:
    """`/ng-rollout/<id>` (then `/training-token-capture` when asked), or "" without a rollout id."""
    if not rollout_id:
        return ""
    return f"/{ROLLOUT_PATH_PREFIX}/{rollout_id}" + (f"/{TOKEN_CAPTURE_PATH_SEGMENT}" if token_capture else "")


def apply_rollout_prefix(base_url: str, rollout_id: str | None, *, token_capture: bool = False) -> str:
    """A server's root URL with the rollout's path prefix appended (unchanged without a rollout id)."""
    if not rollout_id:
        return base_url
    return base_url.rstrip("/") + rollout_path_prefix(rollout_id, token_capture=token_capture)


class ServerClient(BaseModel):
    """Calls the run's other servers by instance name."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    head_server_config: BaseServerConfig | None = None
    global_config_dict: Any = None

    _urls: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def load_from_global_config(cls, head_server_config: BaseServerConfig | None = None) -> ServerClient:
        from .global_config import get_global_config_dict

        return cls(head_server_config=head_server_config, global_config_dict=get_global_config_dict())

    def _resolve_base_url(self, server_name: str) -> str:
        known = self._urls.get(server_name)
        if known is not None:
            return known
        url = current().urls.get(server_name) if installed() else None
        if url is None:
            config = self.global_config_dict
            if config is None or server_name not in config:
                raise ValueError(f"no server instance named {server_name!r} in this run")
            section = get_first_server_config_dict(config, server_name)
            url = f"http://{section['host']}:{section['port']}"
        self._urls[server_name] = url.rstrip("/")
        return self._urls[server_name]

    def _build_server_base_url(self, server_config_dict: Any) -> str:
        """The root URL of a server from its section (`host`, `port`)."""
        return f"http://{server_config_dict['host']}:{server_config_dict['port']}"

    async def request(self, server_name: str, url_path: str, method: str, **kwargs: Any) -> aiohttp.ClientResponse:
        if isinstance(kwargs.get("json"), BaseModel):
            kwargs["json"] = kwargs["json"].model_dump(exclude_unset=True)
        if "json" in kwargs:  # orjson: NeMo Gym's bodies hold values the stdlib encoder refuses (e.g. numpy)
            body = kwargs.pop("json")
            kwargs["data"] = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=_jsonable)
            kwargs["headers"] = {"Content-Type": "application/json", **(kwargs.get("headers") or {})}
        return await request(method, f"{self._resolve_base_url(server_name)}{url_path}", _internal=True, **kwargs)

    async def get(self, server_name: str, url_path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request(server_name, url_path, "GET", **kwargs)

    async def post(self, server_name: str, url_path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request(server_name, url_path, "POST", **kwargs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, set | tuple):
        return list(value)
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


class BaseServer(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: BaseRunServerInstanceConfig

    @classmethod
    def load_config_from_global_config(cls) -> BaseRunServerInstanceConfig:
        runtime = current()
        section = dict(get_first_server_config_dict(runtime.global_config, runtime.name))
        config_class = cls.model_fields["config"].annotation
        assert isinstance(config_class, type) and issubclass(config_class, BaseRunServerInstanceConfig)
        return config_class.model_validate({**section, "name": runtime.name})

    def setup_liveness(self, app: Any) -> None:
        async def alive() -> dict[str, str]:
            return {"status": "ok"}

        for path in ("/readyz", "/livez", "/healthz", "/health", "/"):
            app.get(path, include_in_schema=False)(alive)


class SimpleServer(BaseServer):
    server_client: ServerClient
    ray_enabled: ClassVar[bool | None] = None

    @abstractmethod
    def setup_webserver(self) -> Any: ...

    def get_session_middleware_key(self) -> str:
        return f"{self.__class__.__name__}___{self.config.name}"

    def setup_session_middleware(self, app: Any) -> None:
        """A `session_id` in every request's signed session cookie (Starlette's SessionMiddleware)."""
        from starlette.middleware.sessions import SessionMiddleware

        if getattr(app.state, "nemo_gym_session_middleware_installed", False):
            return
        app.state.nemo_gym_session_middleware_installed = True

        @app.middleware("http")
        async def add_session_id(request: Any, call_next: Any) -> Any:
            request.session[SESSION_ID_KEY] = request.session.get(SESSION_ID_KEY, str(uuid4()))
            return await call_next(request)

        key = self.get_session_middleware_key()
        app.add_middleware(SessionMiddleware, secret_key=key, session_cookie=key)

    def setup_exception_middleware(self, app: Any) -> None:
        """As NeMo Gym: an exception in a route is printed and answered 500 with its repr."""
        from starlette.responses import JSONResponse

        name = self.config.name

        @app.middleware("http")
        async def exceptions_to_500(request: Any, call_next: Any) -> Any:
            try:
                return await call_next(request)
            except aiohttp.ClientResponseError as error:
                content = getattr(error, "response_content", b"")
                text = content.decode(errors="replace") if isinstance(content, bytes) else str(content)
                print(f"{name}: a call to another server failed: {error.status} {text[:2000]}", flush=True)
                return JSONResponse(f"Hit an exception in {name} calling an inner server: {text}", status_code=500)
            except Exception as error:
                print(f"{name}: {request.url.path} raised:\n{traceback.format_exc()}", flush=True)
                return JSONResponse(repr(error), status_code=500)

    @classmethod
    def run_webserver(cls) -> Any:
        """Build the server from the run's configuration and serve it until ng_run stops it."""
        from ._serving import serve_app

        runtime = current()
        if server_uses_ray(cls):
            initialize_ray()
        server = cls(config=cls.load_config_from_global_config(), server_client=ServerClient.load_from_global_config())
        app = server.setup_webserver()
        server.setup_liveness(app)
        server.setup_exception_middleware(app)
        own = runtime.global_config.get(runtime.name) or {}
        section: dict[str, Any] = next((inner for kind in own.values() for inner in kind.values()), {})
        serve_app(app, runtime.fd, runtime.name, runtime.global_config, section.get("host"))
        return app


def is_nemo_gym_fastapi_entrypoint(file: str) -> bool:
    """Whether `file` is the module uvicorn's workers import the app from (never: ngym serves one process)."""
    return False
