"""The head server holds the resolved configuration so that tools started later can find every server, and
publishes where every replica of every instance listens."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ngym.config.errors import ConfigError
from ngym.config.instances import DEFAULT_HOST, HEAD_SERVER_KEY, iter_instances, server_url
from ngym.config.secrets import redact, redact_text, secret_values
from ngym.http.app import json_response
from ngym.http.guard import ErrorGuard, exception_handlers
from ngym.http.hosts import ALLOWED_HOSTS_KEY, allowed_hosts, hosts_setting
from ngym.observability.http_metrics import METRICS_PATH, RequestMetrics, ServerMetrics

if TYPE_CHECKING:
    from ngym.placement.base import ReplicaInfo


def servers_listing(
    config: dict[str, Any], replicas: list[ReplicaInfo] | None = None, redact_line: Callable[[str], str] = str
) -> list[dict[str, Any]]:
    """Every instance with `urls`, one per replica as the placement reports them (without a placement, the
    address its section gives), and `url`, the first of them. With a placement, `replicas` too: each one's url,
    pid, state (up, down, starting) and restarts, with how the process before it ended and its last lines
    (through `redact_line`)."""
    listing = []
    for spec in iter_instances(config):
        entry: dict[str, Any] = {
            "name": spec.name,
            "server_type": spec.server_type,
            "implementation": spec.implementation,
        }
        if replicas is not None:
            mine = [replica for replica in replicas if replica.instance == spec.name]
            urls = [replica.url for replica in mine if replica.url]
            entry["replicas"] = [_replica_entry(replica, redact_line) for replica in mine]
        else:
            urls = [server_url(spec.section)] if spec.section.get("port") is not None else []
        listing.append({**entry, "url": urls[0] if urls else None, "urls": urls})
    return listing


def _replica_entry(replica: ReplicaInfo, redact_line: Callable[[str], str]) -> dict[str, Any]:
    return {
        "label": replica.label,
        "url": replica.url,
        "pid": replica.pid,
        "state": replica.state,
        "restarts": replica.restarts,
        "last_exit": replica.last_exit,
        "last_output": [redact_line(line) for line in replica.last_output],
    }


class HeadState:
    """What ng_run tells tools about the run: ready once every server answers, and where every replica listens
    (a replica that Ray restarts on another node moves)."""

    def __init__(self, replicas: Callable[[], list[ReplicaInfo]] | None = None) -> None:
        self.ready = False
        self.replicas = replicas


def head_app(config: dict[str, Any], state: HeadState) -> Starlette:
    public_config = redact(config)

    async def health(_request: Request) -> Response:
        # The pid lets a tool that started ng_run tell its own gym from another one on the same port.
        return json_response({"status": "ok", "ready": state.ready, "pid": os.getpid()})

    async def get_config(_request: Request) -> Response:
        return json_response(public_config)

    secrets = secret_values(config)

    async def get_servers(_request: Request) -> Response:
        replicas = state.replicas() if state.replicas else None
        return json_response(servers_listing(config, replicas, lambda line: redact_text(line, secrets)))

    def redact_error(text: str) -> str:
        return redact_text(text, secrets)

    head = config.get(HEAD_SERVER_KEY)
    bound = str(head.get("host") or DEFAULT_HOST) if isinstance(head, dict) else DEFAULT_HOST
    hosts = allowed_hosts(bound, hosts_setting(config.get(ALLOWED_HOSTS_KEY)))
    metrics = ServerMetrics("head_server", "head", "head")
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/config", get_config, methods=["GET"]),
        Route("/servers", get_servers, methods=["GET"]),
        Route(METRICS_PATH, metrics.endpoint, methods=["GET"]),
    ]
    metrics.add_routes(routes)
    return Starlette(
        routes=routes,
        exception_handlers=exception_handlers(redact_error),
        middleware=[
            Middleware(RequestMetrics, metrics=metrics),
            Middleware(ErrorGuard, name="head_server", redact=redact_error, hosts=hosts),
        ],
    )


HEAD_APPEAR_SECONDS = 30.0  # ng_run binds its head server within a second or two of starting


def wait_until_ready(host: str, port: int, timeout: float, on_wait: Callable[[], None] | None = None) -> None:
    """Block until the head server says every server is ready: a script may start a tool right beside ng_run.
    No head server at all is an error after HEAD_APPEAR_SECONDS."""
    started = time.monotonic()
    waited = False
    while True:
        try:
            if fetch_from_head(host, port, "/health").get("ready"):
                return
        except ConfigError:
            if time.monotonic() - started > HEAD_APPEAR_SECONDS:
                raise
        if time.monotonic() - started > timeout:
            raise ConfigError(f"ng_run at http://{host}:{port} did not report its servers ready within {timeout:g} s")
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(0.5)


def fetch_from_head(host: str, port: int, path: str, timeout: float = 10.0) -> Any:
    """GET a JSON document from a running ng_run's head server (used by command-line tools)."""
    url = f"http://{host}:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return orjson.loads(answer.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"cannot reach the ng_run head server at {url} ({reason}). Is ng_run running? "
            f"If it was started with +head_server.port=..., pass the same +head_server.port here."
        ) from None


def agents_of(servers: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The agents of a /servers listing: name -> every replica's URL."""
    return {
        str(server["name"]): [str(url) for url in server.get("urls") or [server["url"]]]
        for server in servers
        if server.get("server_type") == "responses_api_agents" and server.get("url")
    }
