"""Garbage-collector settings for long-running, allocation-heavy processes (servers, the collector)."""

import gc


def tune_garbage_collector() -> None:
    """Per-request allocation churn (no real garbage) otherwise triggers full collections over every long-lived
    object several times a second; at 1,000 concurrent sessions that was a third of the CPU (benchmarks/)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
