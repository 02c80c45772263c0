"""Routing over an instance's replicas with the model server's pool rules (ngym.upstream.pool): a new rollout
goes to the least-loaded healthy replica (ties in rotation), every call of that rollout goes to the same replica,
and a replica that cannot be reached leaves rotation until it answers /health again.

Load is counted in rollouts held, not in requests: a rollout holds its replica from its first call to its last.

A router learns that a replica is down from the failure itself, at no cost to any request: a replica that ng_run
restarts refuses connections while another replica of its instance is up (ngym.placement.listening), so the
first call that reaches it fails at once (a refused connection: it never saw the call) and the replica leaves
rotation. It is probed soon after and then less often (PROBE_FIRST_S, doubling up to the router's interval), so
a replica back from a short restart takes sessions again within a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from ngym.http.client import NO_RETRY, HttpClient, UpstreamError
from ngym.upstream.pool import Session, Upstream, UpstreamPool

HEALTH_TIMEOUT_S = 5.0
PROBE_FIRST_S = 0.05  # the first /health probe of a replica that just left rotation


class ReplicaRouter:
    def __init__(self, urls: list[str], http: HttpClient, health_check_interval_s: float = 1.0) -> None:
        self.pool = UpstreamPool([url.rstrip("/") for url in urls])
        self.http = http
        self.health_check_interval_s = health_check_interval_s
        self._probe: asyncio.Task[None] | None = None
        self._probe_in = health_check_interval_s
        self._went_down = asyncio.Event()
        self._came_back = asyncio.Event()

    @property
    def replicas(self) -> list[Upstream]:
        return self.pool.upstreams

    def start(self) -> None:
        """Start probing replicas that left rotation (call from the running event loop)."""
        if self._probe is None and len(self.pool.upstreams) > 1:
            self._probe = asyncio.create_task(self._probe_down())

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[Upstream]:
        """The replica for one rollout, counted as held by it until the block ends."""
        replica = self.pool.choose(Session("", pinned=None))
        replica.in_flight += 1
        replica.requests += 1
        try:
            yield replica
        finally:
            replica.in_flight -= 1

    def failed(self, replica: Upstream, error: UpstreamError) -> None:
        """A call to `replica` failed: out of rotation if the replica could not be reached at all. With a single
        replica there is nowhere else to go, so it stays."""
        if error.server_unreachable and len(self.pool.upstreams) > 1 and replica.healthy:
            self.pool.mark_down(replica)
            self._probe_in = min(PROBE_FIRST_S, self.health_check_interval_s)
            self._went_down.set()

    async def _probe_down(self) -> None:
        while True:
            if not self.pool.down:
                await self._went_down.wait()
            self._went_down.clear()
            with contextlib.suppress(TimeoutError):  # another replica going down starts the quick probes again
                await asyncio.wait_for(self._went_down.wait(), self._probe_in)
            self._probe_in = min(self._probe_in * 2, self.health_check_interval_s)
            for replica in self.pool.down:
                with contextlib.suppress(UpstreamError):
                    result = await self.http.get(replica.base_url + "/health", retry=NO_RETRY, timeout=HEALTH_TIMEOUT_S)
                    if result.ok:
                        self.pool.mark_up(replica)
                        self._came_back.set()

    async def any_back(self, timeout: float) -> bool:
        """Wait until some replica is in rotation again (the probes bring it back), at most `timeout` seconds;
        whether one is."""
        while not any(replica.healthy for replica in self.pool.upstreams):
            self._came_back.clear()
            try:
                await asyncio.wait_for(self._came_back.wait(), timeout)
            except TimeoutError:
                break
        return any(replica.healthy for replica in self.pool.upstreams)
