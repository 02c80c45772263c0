"""Prometheus metrics of one server process: what it is asked, how fast it answers, what fails, and `/metrics`.

Each server owns its registry (no process-global one), so a test can run several servers in one process. The
middleware is plain ASGI, outside the error guard, so it sees every answer's final status (a crash answered 500
included). Per request it finds the route (a dict lookup by path, or one regex per route with parameters), then
moves a gauge twice, counts and observes the time on that route's metric children, made once: a few µs against a
model server's ~140 µs of CPU a request (benchmarks/README.md measures both). Routes are labelled by their
template (`/{path}`), never by the raw path, so the number of series stays bounded whatever callers send.

With `num_workers > 1` every worker has its own registry and a scrape reaches one of them; the `pid` in
`ngym_server_info` says which.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"  # no route answered (404s, refused hosts): one series, whatever the path was
# Seconds: a health check answers in well under a millisecond; a model call or a verify can take minutes.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


@dataclass(slots=True)
class _RouteSeries:
    """One route's metric children, made once, so a request never looks a label set up."""

    in_flight: Gauge
    latency: Histogram
    answered: dict[int, Counter]  # status // 100 -> requests answered with that class


class ServerMetrics:
    """The registry of one server instance and its request metrics."""

    def __init__(self, instance: str, server_type: str, implementation: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        info = Info("ngym_server", "this server process", registry=self.registry)
        info.info({"instance": instance, "server_type": server_type, "implementation": implementation,
                   "pid": str(os.getpid())})  # fmt: skip
        self._requests = Counter(
            "ngym_requests", "requests answered, by route and status class", ("route", "status_class"),
            registry=self.registry,
        )  # fmt: skip
        self._latency = Histogram(
            "ngym_request_duration_seconds", "time from a request's arrival to its answer's last byte, by route",
            ("route",), buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._in_flight = Gauge(
            "ngym_requests_in_flight", "requests being answered, by route", ("route",), registry=self.registry
        )
        self._series: dict[str, _RouteSeries] = {}
        self._static: dict[str, str] = {}
        self._dynamic: list[Route] = []
        self.series(UNMATCHED)

    def add_routes(self, routes: Sequence[BaseRoute]) -> None:
        """Know the app's routes, and make each one's series, at start-up."""
        self._static, self._dynamic = {}, []
        for route in routes:
            if not isinstance(route, Route):
                continue
            self.series(route.path)
            if route.param_convertors:
                self._dynamic.append(route)
            else:
                self._static[route.path] = route.path

    def route_of(self, path: str) -> str:
        """The template of the route serving `path`: a dict lookup, or a regex per route with parameters."""
        template = self._static.get(path)
        if template is not None:
            return template
        for route in self._dynamic:
            if route.path_regex.match(path):
                return route.path
        return UNMATCHED

    def series(self, route: str) -> _RouteSeries:
        found = self._series.get(route)
        if found is None:
            answered = {int(name[0]): self._requests.labels(route, name) for name in STATUS_CLASSES}
            found = _RouteSeries(self._in_flight.labels(route), self._latency.labels(route), answered)
            self._series[route] = found
        return found

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, _request: Request) -> Response:
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """ASGI middleware: counts, times and tracks every HTTP request of the app it wraps."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the caller gets if the app raises before answering (the server's own 500)
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        series = metrics.series(metrics.route_of(scope["path"]))
        series.in_flight.inc()
        try:
            await self.app(scope, receive, recording_send)
        finally:
            series.in_flight.dec()
            series.latency.observe(time.perf_counter() - started)
            counter = series.answered.get(status // 100)
            if counter is not None:
                counter.inc()
