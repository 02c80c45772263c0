"""Several vLLM instances of one model, started together with their progress reported, stopped together.

Each instance is a `VllmServer` (process.py) on a port of its own with its own log file; they start in
parallel. If any fails, all are stopped and the error carries the failing command and the tail of its log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ngym.vllm.process import VllmServer, VllmStartError

Report = Callable[[str], None]


@dataclass(frozen=True)
class InstancePlan:
    index: int
    model: str
    python: Path
    serve_args: tuple[str, ...]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = None
    served_name: str | None = None  # --served-model-name, when it differs from `model`


class VllmFleet:
    def __init__(self, plans: Sequence[InstancePlan], report: Report, startup_timeout_s: float) -> None:
        self.plans = list(plans)
        self.report = report
        self.startup_timeout_s = startup_timeout_s
        self.servers: list[VllmServer] = []

    async def start(self) -> list[str]:
        """Start every instance; their base URLs (…/v1), in instance order."""
        self.servers = [self._server(plan) for plan in self.plans]
        starts = [asyncio.to_thread(self._start_one, p, s) for p, s in zip(self.plans, self.servers, strict=True)]
        results = await asyncio.gather(*starts, return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await asyncio.to_thread(self.stop)
            raise failures[0]
        return [server.base_url for server in self.servers]

    @staticmethod
    def _server(plan: InstancePlan) -> VllmServer:
        return VllmServer(
            plan.model,
            python=plan.python,
            env=plan.env,
            log_path=plan.log_path,
            api_key=plan.api_key,
            serve_args=plan.serve_args,
        )

    def _start_one(self, plan: InstancePlan, server: VllmServer) -> None:
        name = f"vLLM {plan.index}"
        devices = plan.env.get("CUDA_VISIBLE_DEVICES")
        on = f" on GPU {devices}" if devices else ""
        self.report(f"{name}: starting {plan.model}{on}; its log: {plan.log_path}")
        started = time.monotonic()
        try:
            server.start(self.startup_timeout_s, on_progress=lambda phase: self.report(f"{name}: {phase}"))
        except VllmStartError as exc:
            raise VllmStartError(f"{name} failed to start: {exc}") from None
        served = plan.served_name or plan.model
        self.report(f"{name}: serving {served} at {server.base_url} (ready in {time.monotonic() - started:.0f} s)")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def alive(self) -> list[bool]:
        return [server.is_running() for server in self.servers]
