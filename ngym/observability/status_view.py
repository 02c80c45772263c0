"""What `ng_status` shows of each vLLM server: every model server's `GET /vllm_servers` (its own requests in flight
and turns, and vLLM's running and waiting requests, KV-cache use and prefix-cache hit rate), one line a vLLM, the
busiest marked, so that which server is saturated is one look."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

VLLM_SERVERS_PATH = "/vllm_servers"
MODEL_SERVERS = "responses_api_models"


def fetch_vllm_servers(url: str, timeout: float = 5.0) -> list[dict[str, Any]] | None:
    """A model server's view of its vLLM servers; None when it has none to show (not a vllm_model, or down)."""
    try:
        with urllib.request.urlopen(url + VLLM_SERVERS_PATH, timeout=timeout) as answer:
            view = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    servers = view.get("vllm_servers") if isinstance(view, dict) else None
    return servers if isinstance(servers, list) else None


def attach_vllm_servers(servers: list[dict[str, Any]]) -> None:
    """Add `vllm_servers` to each answering model server of ng_run's `/servers` list (asked all at once)."""
    models = [s for s in servers if s.get("server_type") == MODEL_SERVERS and s.get("url") and s["status"] == "ok"]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(models)))) as pool:
        for server, view in zip(models, pool.map(lambda s: fetch_vllm_servers(s["url"]), models), strict=True):
            if view is not None:
                server["vllm_servers"] = mark_busiest(view)


def load_score(entry: dict[str, Any]) -> tuple[float, float, float]:
    """How saturated a vLLM is: its waiting requests, then its KV-cache use, then what ngym has in flight there."""
    vllm = entry.get("vllm") or {}
    return (float(vllm.get("waiting") or 0), float(vllm.get("kv_cache_usage") or 0), float(entry.get("in_flight", 0)))


def mark_busiest(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`busiest: true` on the most saturated of several vLLMs with any load (ng_status and the viewer show it)."""
    busiest = max(entries, key=load_score) if len(entries) > 1 else None
    for entry in entries:
        entry["busiest"] = entry is busiest and load_score(entry) > (0, 0, 0)
    return entries


def vllm_lines(server: dict[str, Any]) -> list[str]:
    """One line per vLLM of a model server."""
    return [_line(entry, bool(entry.get("busiest"))) for entry in server.get("vllm_servers") or []]


def _line(entry: dict[str, Any], busiest: bool) -> str:
    rotation = "in rotation" if entry.get("in_rotation") else "OUT of rotation"
    turns = sum((entry.get("turns") or {}).values())
    ours = f"ngym: {entry.get('in_flight', 0)} in flight, {turns} turns"
    vllm = entry.get("vllm")
    if vllm is None:
        theirs = f"vLLM: {entry.get('vllm_unavailable') or 'no metrics'}"
    else:
        running, waiting = _number(vllm.get("running")), _number(vllm.get("waiting"))
        kv, hits = _percent(vllm.get("kv_cache_usage")), _percent(vllm.get("prefix_cache_hit_rate"))
        theirs = f"vLLM: {running} running, {waiting} waiting, KV cache {kv}, prefix hits {hits}"
    mark = "  <- busiest" if busiest else ""
    return f"  vLLM {entry.get('url')}  {rotation}  {ours}  {theirs}{mark}"


def _number(value: Any) -> str:
    return "?" if value is None else f"{value:g}"


def _percent(value: Any) -> str:
    return "?" if value is None else f"{100 * value:.0f}%"
