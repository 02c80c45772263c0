"""Optional OpenTelemetry traces of rollouts, with the standard SDK, written to local files.

With `+otel_traces=true` on ng_run (or a directory: `+otel_traces=/path`), every agent replica writes the spans
it makes to `<dir>/<instance>-<pid>.jsonl` (default dir: `<run_dir>/traces`), one span a line in the SDK's own
JSON: a `rollout` span for each `/run` (its task and rollout indices as attributes, from the collector's
`X-NGym-Rollout` header), under it a span per model call, tool call, `/seed_session` and `/verify`. A caller's
W3C `traceparent` header makes the rollout a child of the caller's trace, and every call the agent makes carries
its own, so a model server or a tool that traces joins the same trace.

Off (the default), `RolloutTracing` costs one attribute check per call. The SDK is an optional dependency
(`pip install 'ngym[traces]'`; `make setup` installs it); asking for traces without it stops start-up with that
advice. Each tracer has its own provider, never the SDK's process-global one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import IO, Any

ROLLOUT_HEADER = "X-NGym-Rollout"  # "<task index>.<rollout index>", sent by ng_collect_rollouts with each /run
TRACES_KEY = "otel_traces"  # run-wide: true (the run's traces/ folder) or a directory
TRACES_FOLDER = "traces"


class TracingUnavailable(RuntimeError):
    """Traces were asked for and the OpenTelemetry SDK is not installed."""


def traces_directory(setting: Any, run_dir: str | None) -> Path | None:
    """Where traces go for the run-wide setting: None when off."""
    if setting is None or setting is False or (isinstance(setting, str) and setting.lower() in ("", "false")):
        return None
    if setting is True or (isinstance(setting, str) and setting.lower() == "true"):
        return Path(run_dir or ".ngym") / TRACES_FOLDER
    return Path(str(setting))


def rollout_header(task_index: int, rollout_index: int) -> dict[str, str]:
    return {ROLLOUT_HEADER: f"{task_index}.{rollout_index}"}


class RolloutTracing:
    """Spans of one server process; every method is a cheap no-op when tracing is off."""

    def __init__(self, instance: str, directory: Path | None) -> None:
        self.enabled = directory is not None
        self.path: Path | None = None
        self._file: IO[str] | None = None
        if directory is None:
            return
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            raise TracingUnavailable(
                f"{TRACES_KEY} asks for traces, but the OpenTelemetry SDK is not installed: "
                "pip install 'ngym[traces]' (make setup installs it)"
            ) from None
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{instance.replace('#', '-')}-{os.getpid()}.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        exporter = ConsoleSpanExporter(out=self._file, formatter=lambda span: span.to_json(indent=None) + "\n")
        self._provider = TracerProvider(resource=Resource.create({"service.name": instance}))
        # Spans end when a call ends; a line per span, written then, so a crash loses none already ended.
        self._provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("ngym")
        self._propagator = TraceContextTextMapPropagator()

    @contextlib.contextmanager
    def rollout(self, headers: Mapping[str, str]) -> Iterator[None]:
        """The span of one `/run`: a child of the caller's `traceparent`, if any, with the rollout's indices."""
        if not self.enabled:
            yield
            return
        attributes: dict[str, Any] = {}
        task, _, rollout = (headers.get(ROLLOUT_HEADER) or "").partition(".")
        if task.isdigit() and rollout.isdigit():
            attributes = {"ngym.task_index": int(task), "ngym.rollout_index": int(rollout)}
        parent = self._propagator.extract(carrier=dict(headers))
        with self._tracer.start_as_current_span("rollout", context=parent, attributes=attributes):
            yield

    @contextlib.contextmanager
    def call(self, name: str, headers: MutableMapping[str, str], **attributes: Any) -> Iterator[None]:
        """The span of one call the agent makes; its `traceparent` is added to `headers`."""
        if not self.enabled:
            yield
            return
        with self._tracer.start_as_current_span(name, attributes=attributes):
            self._propagator.inject(carrier=headers)
            yield

    def close(self) -> None:
        if self.enabled:
            self._provider.shutdown()
            if self._file is not None:
                self._file.close()
