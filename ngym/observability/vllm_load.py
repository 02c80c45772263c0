"""How loaded each vLLM server of a model server is, in one look: the model server's own counts (requests in
flight, in rotation, turns and tokens) beside vLLM's own `/metrics` (requests running and waiting, KV-cache use,
prefix-cache hit rate), read when asked (`GET /vllm_servers` on the model server, which `ng_status` shows).

vLLM's metrics are read from its Prometheus exposition with prometheus_client's parser; a vLLM that does not
serve them (or does not answer in time) is shown with the reason, never as an error of the model server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ngym.http.client import NO_RETRY, HttpClient, UpstreamError
from ngym.observability.upstream_metrics import TurnCounts
from ngym.upstream.pool import Upstream

VLLM_METRICS_PATH = "/metrics"
# vLLM's names (v1 engine); older releases called KV-cache use gpu_cache_usage_perc.
RUNNING, WAITING = "vllm:num_requests_running", "vllm:num_requests_waiting"
KV_CACHE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREFIX_HITS, PREFIX_QUERIES = "vllm:prefix_cache_hits", "vllm:prefix_cache_queries"


@dataclass(frozen=True)
class VllmLoad:
    """vLLM's own view, summed over its engines (KV-cache use: the fullest engine)."""

    running: float | None
    waiting: float | None
    kv_cache_usage: float | None  # 0..1
    prefix_cache_hit_rate: float | None  # hits / queries since vLLM started; None before any query


def parse_vllm_metrics(text: str) -> VllmLoad:
    sums: dict[str, float] = {}
    peaks: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            sums[name] = sums.get(name, 0.0) + sample.value
            peaks[name] = max(peaks.get(name, 0.0), sample.value)
    kv = next((peaks[name] for name in KV_CACHE if name in peaks), None)
    queries = sums.get(PREFIX_QUERIES)
    hit_rate = sums.get(PREFIX_HITS, 0.0) / queries if queries else None
    return VllmLoad(sums.get(RUNNING), sums.get(WAITING), kv, hit_rate)


async def read_vllm_load(
    http: HttpClient, upstream: Upstream, headers: Mapping[str, str], timeout: float
) -> VllmLoad | str:
    """vLLM's load, or why it could not be read."""
    try:
        result = await http.get(upstream.root_url + VLLM_METRICS_PATH, headers, retry=NO_RETRY, timeout=timeout)
    except UpstreamError as exc:
        return exc.reason
    if not result.ok:
        return f"no {VLLM_METRICS_PATH} (HTTP {result.status})"
    try:
        return parse_vllm_metrics(result.body.decode(errors="replace"))
    except ValueError as exc:
        return f"unreadable {VLLM_METRICS_PATH}: {exc}"


async def vllm_servers_view(
    http: HttpClient,
    upstreams: list[Upstream],
    headers_of: list[dict[str, str]],
    turns: TurnCounts,
    timeout: float = 2.0,
) -> list[dict[str, Any]]:
    """One entry per vLLM server: the model server's counts and vLLM's load (read from all at once)."""
    loads = await asyncio.gather(*(read_vllm_load(http, u, headers_of[u.index], timeout) for u in upstreams))
    view: list[dict[str, Any]] = []
    for upstream, load in zip(upstreams, loads, strict=True):
        paths = {path: counts for (index, path), counts in turns.by_server.items() if index == upstream.index}
        view.append({
            "url": upstream.shown,
            "in_rotation": upstream.healthy,
            "in_flight": upstream.in_flight,
            "requests": upstream.requests,
            "left_rotation": upstream.times_down,
            "turns": {path: counts.turns for path, counts in paths.items()},
            "prompt_tokens": sum(counts.prompt_tokens for counts in paths.values()),
            "completion_tokens": sum(counts.completion_tokens for counts in paths.values()),
            "vllm": asdict(load) if isinstance(load, VllmLoad) else None,
            "vllm_unavailable": load if isinstance(load, str) else None,
        })  # fmt: skip
    return view
