"""A running gym as its tools show it: ng_run's `/servers`, whether each server answers, and each model server's
vLLM servers with their load (ngym.observability.status_view). `ng_status` prints it; `ng_viewer` shows it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ngym.http.probe import answers
from ngym.observability.status_view import attach_vllm_servers
from ngym.servers.head import fetch_from_head


def gym_servers(host: str, port: int) -> list[dict[str, Any]]:
    """Every server of the ng_run whose head server listens at host:port, with `status` ("ok" or "not
    answering") and, for answering model servers, `vllm_servers`. ConfigError when the head server does not
    answer (it names the address)."""
    servers: list[dict[str, Any]] = fetch_from_head(host, port, "/servers")
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(servers)))) as pool:
        answering = list(pool.map(lambda server: bool(server.get("url")) and answers(server["url"]), servers))
    for server, ok in zip(servers, answering, strict=True):
        server["status"] = "ok" if ok else "not answering"
    attach_vllm_servers(servers)
    return servers
