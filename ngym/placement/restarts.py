"""How ng_run brings back a local replica that died: its budget of restarts (`max_restarts`, as on a Ray
cluster), the back-off between them, and how a process's end is told."""

from __future__ import annotations

import signal
from dataclasses import dataclass

DEFAULT_LOCAL_MAX_RESTARTS = 3
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """`max_restarts` per replica over the whole run (-1: without limit, as Ray reads it); the n-th restart
    waits base * 2**n seconds, at most `max_s`."""

    max_restarts: int = DEFAULT_LOCAL_MAX_RESTARTS
    base_s: float = BACKOFF_BASE_S
    max_s: float = BACKOFF_MAX_S

    @classmethod
    def for_instance(cls, max_restarts: int | None) -> RestartPolicy:
        return cls(DEFAULT_LOCAL_MAX_RESTARTS if max_restarts is None else max_restarts)

    def allows(self, restarts_done: int) -> bool:
        return self.max_restarts < 0 or restarts_done < self.max_restarts

    def delay(self, restarts_done: int) -> float:
        """Seconds to wait before restart number `restarts_done + 1`."""
        return float(min(self.max_s, self.base_s * (2 ** min(restarts_done, 32))))

    def budget(self) -> str:
        return "unlimited" if self.max_restarts < 0 else str(self.max_restarts)


def describe_exit(returncode: int) -> str:
    """`exit code 3`, or `killed by signal SIGKILL` for a process a signal ended (asyncio: a negative code)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    return f"killed by signal {name}"
