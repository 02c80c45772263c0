"""How ng_run brings back a local replica that died: its budget of restarts (`max_restarts`, as on a Ray
cluster) that long healthy running refills (`restart_refill_s`), the back-off between restarts, and how a
process's end is told."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_LOCAL_MAX_RESTARTS = 3
DEFAULT_RESTART_REFILL_S = 1800.0  # one restart credited back per 30 minutes of healthy running
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """`max_restarts` per replica (-1: without limit, as Ray reads it); every `refill_s` seconds a replica runs
    healthy give one restart back (0: never); the n-th outstanding restart waits base * 2**n seconds, at most
    `max_s`."""

    max_restarts: int = DEFAULT_LOCAL_MAX_RESTARTS
    refill_s: float = DEFAULT_RESTART_REFILL_S
    base_s: float = BACKOFF_BASE_S
    max_s: float = BACKOFF_MAX_S

    @classmethod
    def for_instance(cls, max_restarts: int | None, refill_s: float | None = None) -> RestartPolicy:
        return cls(
            DEFAULT_LOCAL_MAX_RESTARTS if max_restarts is None else max_restarts,
            DEFAULT_RESTART_REFILL_S if refill_s is None else refill_s,
        )

    def allows(self, restarts_done: int) -> bool:
        return self.max_restarts < 0 or restarts_done < self.max_restarts

    def delay(self, restarts_done: int) -> float:
        """Seconds to wait before restart number `restarts_done + 1`."""
        return float(min(self.max_s, self.base_s * (2 ** min(restarts_done, 32))))

    def budget(self) -> str:
        return "unlimited" if self.max_restarts < 0 else str(self.max_restarts)


@dataclass(slots=True)
class RestartBudget:
    """One replica's account: `spent` restarts count against `max_restarts` (and set the back-off); each
    `refill_s` of healthy running (summed over the replica's lives, from `up()` to the next `died()`) takes one
    back while any is spent. `restarts` counts them all, for what ng_run shows. The clock is injectable."""

    policy: RestartPolicy
    clock: Callable[[], float] = time.monotonic
    restarts: int = 0
    spent: int = 0
    healthy_s: float = 0.0  # healthy running not yet credited back
    up_since: float | None = None

    def up(self) -> None:
        """The replica answers /health: healthy running counts from now."""
        if self.up_since is None:
            self.up_since = self.clock()

    def credit(self) -> None:
        """Credit the healthy running so far (ng_run calls it on each death; it may call it any time)."""
        now = self.clock()
        if self.up_since is not None:
            self.healthy_s += now - self.up_since
            self.up_since = now
        if self.policy.refill_s <= 0:
            self.healthy_s = 0.0
            return
        credited = min(self.spent, int(self.healthy_s // self.policy.refill_s))
        self.spent -= credited
        # What could not be credited (nothing was spent) is not banked: the budget never exceeds max_restarts.
        self.healthy_s = self.healthy_s - credited * self.policy.refill_s if self.spent else 0.0

    def died(self) -> float | None:
        """The replica died: the seconds to wait before restarting it, or None when its budget is spent."""
        self.credit()
        self.up_since = None
        if not self.policy.allows(self.spent):
            return None
        delay = self.policy.delay(self.spent)
        self.spent += 1
        self.restarts += 1
        return delay

    def shown(self) -> str:
        """`restart 2 of 3` as ng_run prints it: the restarts counted against the budget now."""
        return f"{self.spent} of {self.policy.budget()}"


def describe_exit(returncode: int) -> str:
    """`exit code 3`, or `killed by signal SIGKILL` for a process a signal ended (asyncio: a negative code)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = str(-returncode)
    return f"killed by signal {name}"
