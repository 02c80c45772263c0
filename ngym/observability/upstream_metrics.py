"""The model server's view of each vLLM server it sends to, as Prometheus metrics: requests in flight and sent,
whether it is in rotation, how often it left rotation, and the tokens and turns of the answers it gave, by the
way each turn was completed (the chat path, the token-exact path, the completions path).

The request path only adds integers to a plain per-server record (`TurnCounts.add`); the metric families are
built from the pool and those records when `/metrics` is scraped, so a model server serving thousands of requests
a second pays nothing for series it is not asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ngym.upstream.pool import Upstream

LABELS = ("vllm",)


@dataclass(slots=True)
class _Turns:
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class TurnCounts:
    """Turns and tokens per vLLM server (by its index in the pool) and per completion path."""

    by_server: dict[tuple[int, str], _Turns] = field(default_factory=dict)

    def add(self, server: int, path: str, answer: dict[str, Any] | None) -> None:
        key = (server, path)
        counts = self.by_server.get(key)
        if counts is None:
            counts = self.by_server[key] = _Turns()
        counts.turns += 1
        usage = answer.get("usage") if answer is not None else None
        if isinstance(usage, dict):  # Chat Completions' names, else the Responses API's (vLLM's own /v1/responses)
            prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
            completion = usage.get("completion_tokens", usage.get("output_tokens"))
            counts.prompt_tokens += prompt if isinstance(prompt, int) else 0
            counts.completion_tokens += completion if isinstance(completion, int) else 0


class UpstreamCollector(Collector):
    """Reads the pool (`upstreams()`: the servers now in use) and the turn counts at scrape time."""

    def __init__(self, upstreams: Callable[[], list[Upstream]], turns: TurnCounts) -> None:
        self.upstreams = upstreams
        self.turns = turns

    def collect(self) -> Iterator[Metric]:
        upstreams = self.upstreams()
        shown = {upstream.index: upstream.shown for upstream in upstreams}
        in_flight = GaugeMetricFamily("ngym_vllm_requests_in_flight", "requests sent, not yet answered", labels=LABELS)
        sent = CounterMetricFamily("ngym_vllm_requests", "requests sent (retries and failovers too)", labels=LABELS)
        healthy = GaugeMetricFamily("ngym_vllm_in_rotation", "1 while new requests may go to it", labels=LABELS)
        left = CounterMetricFamily("ngym_vllm_left_rotation", "times it was taken out of rotation", labels=LABELS)
        for upstream in upstreams:
            labels = [upstream.shown]
            in_flight.add_metric(labels, upstream.in_flight)
            sent.add_metric(labels, upstream.requests)
            healthy.add_metric(labels, 1.0 if upstream.healthy else 0.0)
            left.add_metric(labels, upstream.times_down)
        by_path = ("vllm", "path")
        turns = CounterMetricFamily("ngym_vllm_turns", "turns completed, by completion path", labels=by_path)
        prompt = CounterMetricFamily("ngym_vllm_prompt_tokens", "prompt tokens of completed turns", labels=by_path)
        completion = CounterMetricFamily("ngym_vllm_completion_tokens", "tokens generated in turns", labels=by_path)
        for (index, path), counts in sorted(self.turns.by_server.items()):
            labels = [shown.get(index, str(index)), path]
            turns.add_metric(labels, counts.turns)
            prompt.add_metric(labels, counts.prompt_tokens)
            completion.add_metric(labels, counts.completion_tokens)
        yield from (in_flight, sent, healthy, left, turns, prompt, completion)
