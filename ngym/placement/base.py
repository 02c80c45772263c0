"""The interface ng_run drives: start every replica of every instance, watch them, stop them all."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ngym.placement.spec import PlannedInstance

Show = Callable[[str], None]  # ng_run's output: every line goes through its redaction

# A replica's state, as /servers and ng_status show it.
UP = "up"  # it answers /health
DOWN = "down"  # its process died; it waits for its restart (a local replica refuses connections meanwhile
# when another replica of its instance is up: ngym.placement.listening)
STARTING = "starting"  # started or restarted, not yet answering /health


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """One running replica, as the servers table and the head server show it."""

    instance: str
    replica: int
    label: str
    kind: str  # <server type>/<implementation>
    url: str | None
    pid: int | None
    node: str | None = None  # the Ray node it runs on; None for a local process
    state: str = UP
    restarts: int = 0  # times it was restarted (by ng_run, or by Ray)
    # How the process before the running one ended ("killed by signal SIGKILL") and the last lines it printed;
    # known for local processes only.
    last_exit: str | None = None
    last_output: tuple[str, ...] = ()


class Placement(ABC):
    # Where the placement's own lines and its servers' output go; ng_run sets its redacting printer.
    show: Show = staticmethod(lambda text: print(text, flush=True))

    @abstractmethod
    async def start(
        self, config: dict[str, Any], instances: list[PlannedInstance], timeout: float, stop: asyncio.Event
    ) -> str | None:
        """Start every replica of every instance and wait until each answers /health (an instance may take
        `timeout` plus its own startup budget). None when all are ready, else why not, to be shown as it is."""

    @abstractmethod
    async def watch(self, stop: asyncio.Event) -> str | None:
        """Until `stop` is set (None) or a server fails for good (why, to be shown as it is)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every replica this placement started and leave nothing of it behind."""

    @abstractmethod
    def replicas(self) -> list[ReplicaInfo]:
        """Every replica started, in instance order."""
