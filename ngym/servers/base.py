"""The Server base class: built from its config section, it exposes an ASGI app and can run as a process."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ngym.config.errors import ConfigError
from ngym.config.instances import DEFAULT_HOST, InstanceSpec, ServerRef, iter_instances
from ngym.config.secrets import redact_text, secret_values
from ngym.config.validation import describe_validation_error
from ngym.http.app import json_response
from ngym.http.client import HttpClient
from ngym.http.guard import ErrorAnswers, ErrorGuard, exception_handlers
from ngym.http.hosts import ALLOWED_HOSTS_KEY, allowed_hosts, hosts_setting
from ngym.observability.http_metrics import METRICS_PATH, RequestMetrics, ServerMetrics
from ngym.placement.directory import Directory
from ngym.placement.spec import ServerLaunch, launch_from_config


class ServerConfig(BaseModel):
    """Keys every server instance accepts. Subclasses add their own; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entrypoint: str = "app.py"
    host: str | None = None
    port: int | None = None
    num_workers: int = Field(default=1, ge=1, description="processes serving this instance on one port")
    num_replicas: int = Field(default=1, ge=1, description="copies of this instance, each on its own port")
    # Each replica's reservation on a Ray cluster (ray_head_node_address); errors without one.
    num_cpus: float | None = Field(default=None, ge=0, description="Ray: CPUs per replica (default num_workers)")
    num_gpus: float | None = Field(default=None, ge=0, description="Ray: GPUs per replica")
    resources: dict[str, float] | None = Field(default=None, description="Ray: custom resources per replica")
    max_restarts: int | None = Field(default=None, ge=-1, description="restarts of a replica that dies (3, -1: any)")
    metrics: bool = Field(default=True, description="serve Prometheus metrics at /metrics (ngym.observability)")
    restart_refill_s: float | None = Field(
        default=None, ge=0, description="local: healthy seconds that give one restart back (1800, 0: never)"
    )
    # Descriptive metadata found in NeMo Gym configs; accepted so those configs work unchanged.
    domain: str | None = None
    description: str | None = None
    example_description: str | None = None
    verified: bool | None = None
    verified_url: str | None = None
    license: str | None = None
    value: str | None = None


class ServerReference(BaseModel):
    """`{type: <server type>, name: <instance name>}` in a server's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["responses_api_models", "resources_servers", "responses_api_agents"]
    name: str

    def as_ref(self) -> ServerRef:
        return ServerRef(self.type, self.name)


class StartupError(Exception):
    """A server cannot start; the message says what to check."""


@dataclass
class ServerContext:
    instance_name: str
    # The configuration as this server sees it (ServerLaunch.config_view): the run-wide settings servers read
    # (run_dir, hf_token) and its own instance's section. Other servers' sections are not here.
    config: dict[str, Any]
    directory: Directory = field(default_factory=lambda: Directory({}))
    http: HttpClient = field(default_factory=HttpClient)
    # Every secret this server holds (api keys, URL passwords, secret headers): cut out of all that is shown.
    secrets: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.secrets = secret_values(self.config)

    def redact(self, text: str) -> str:
        return redact_text(text, self.secrets)


ConfigT = TypeVar("ConfigT", bound=ServerConfig)


class Server(Generic[ConfigT]):
    server_type: ClassVar[str]
    config_model: ClassVar[type[ServerConfig]] = ServerConfig
    # The one place where this kind of server's domain errors become HTTP answers (ngym.http.guard).
    error_answers: ClassVar[ErrorAnswers] = {}

    def __init__(self, config: ConfigT, context: ServerContext) -> None:
        self.config = config
        self.context = context
        self.http = context.http
        self.directory = context.directory
        self.metrics = ServerMetrics(context.instance_name, self.server_type, type(self).__name__)

    @classmethod
    def from_config(cls, config: dict[str, Any], instance_name: str, http: HttpClient | None = None) -> Self:
        """Build the server for instance_name of a resolved configuration (in-process use): it is handed what
        ng_run would hand it, with the other instances at the ports their sections give."""
        return cls.from_launch(launch_from_config(config, instance_spec(config, instance_name)), http)

    @classmethod
    def from_launch(cls, launch: ServerLaunch, http: HttpClient | None = None) -> Self:
        """Build the server from what ng_run hands one replica."""
        validated = validate_server_config(cls.config_model, launch.spec)
        context = ServerContext(
            launch.instance, launch.config_view(), Directory(launch.directory), http or cls.http_client(validated)
        )
        return cls(validated, context)  # type: ignore[arg-type]

    @classmethod
    def http_client(cls, config: Any) -> HttpClient:
        """The outbound client this server's requests use; override to set its timeouts and retries."""
        return HttpClient()

    @classmethod
    def startup_budget_s(cls, config: Any) -> float:
        """Seconds this server's start-up may take beyond ng_run's `server_startup_timeout_s` (a server that
        launches vLLM itself needs minutes)."""
        return 0.0

    def routes(self) -> list[BaseRoute]:
        return [Route("/health", self.health, methods=["GET"])]

    async def startup(self) -> None:
        """Runs once before the first request; raise StartupError to refuse to start."""

    async def shutdown(self) -> None:
        """Runs once after the last request."""

    def warn(self, message: str) -> None:
        """A start-up warning for the person running ng_run (servers log nothing per request)."""
        print(f"{self.context.instance_name}: warning: {self.context.redact(message)}", file=sys.stderr, flush=True)

    async def health(self, _request: Request) -> Response:
        return json_response({"status": "ok", "instance": self.context.instance_name})

    async def open(self) -> None:
        """Start the HTTP client, then the server's own start-up (checks, background tasks)."""
        await self.http.start()
        try:
            await self.startup()
        except BaseException:
            await self.http.close()
            raise

    async def close(self) -> None:
        try:
            await self.shutdown()
        finally:
            await self.http.close()

    def app(self, manage_lifecycle: bool = True) -> Starlette:
        """The ASGI app. With manage_lifecycle, its lifespan runs open() and close() (in-process use);
        the process launcher runs them itself so that a refusal to start is one clear line."""

        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            await self.open()
            try:
                yield
            finally:
                await self.close()

        extra_hosts = hosts_setting(self.context.config.get(ALLOWED_HOSTS_KEY))
        hosts = allowed_hosts(self.config.host or DEFAULT_HOST, extra_hosts)
        middleware = [Middleware(ErrorGuard, name=self.context.instance_name, redact=self.context.redact, hosts=hosts)]
        routes = self.routes()
        if self.config.metrics:  # outside the guard, so the guard's own answers (403, 500) are counted too
            routes.append(Route(METRICS_PATH, self.metrics.endpoint, methods=["GET"]))
            self.metrics.add_routes(routes)
            middleware.insert(0, Middleware(RequestMetrics, metrics=self.metrics))
        return Starlette(
            routes=routes,
            lifespan=lifespan if manage_lifecycle else None,
            exception_handlers=exception_handlers(self.context.redact, self.error_answers),
            middleware=middleware,
        )


def instance_spec(config: dict[str, Any], instance_name: str) -> InstanceSpec:
    for spec in iter_instances(config):
        if spec.name == instance_name:
            return spec
    known = ", ".join(spec.name for spec in iter_instances(config)) or "none"
    raise ConfigError(f"no server instance named {instance_name!r} in the configuration (instances: {known})")


def validate_server_config(model: type[ServerConfig], spec: InstanceSpec, where: str = "") -> ServerConfig:
    """Validate an instance's section; unknown keys name the nearest known key."""
    try:
        return model.model_validate(spec.section)
    except ValidationError as exc:
        title = "invalid server configuration" + (f" [{where}]" if where else "")
        raise ConfigError(describe_validation_error(exc, model, spec.key_path, title)) from None
