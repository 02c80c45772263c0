"""What a starting vLLM is doing, read from its log: the phases a person waiting wants to see.

vLLM's start-up is long on a GPU (minutes of weight loading and graph capture) and silent on its port until the
very end; these markers (vLLM 0.32's log lines) turn its log into a few progress lines. A marker vLLM stops
printing only makes progress quieter, never wrong: readiness is decided by its HTTP answers, not by these.
"""

from __future__ import annotations

from pathlib import Path

# (text in a log line, the phase it starts); in the order vLLM goes through them.
PHASES: tuple[tuple[str, str], ...] = (
    ("Initializing a V1 LLM engine", "starting the engine"),
    ("Starting to load model", "loading the weights"),
    ("Loading weights took", "weights loaded; profiling memory and allocating the KV cache"),
    ("init engine (profile, create kv cache", "engine ready; starting the HTTP server"),
    ("Application startup complete", "HTTP server up; checking the model is served"),
)
READ_LIMIT = 1 << 20  # a poll reads at most this much new log


class StartupProgress:
    """Reads a log incrementally; each poll() returns the phases reached since the previous one."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.offset = 0
        self.reached = 0  # how many PHASES have been reported
        self.pending = b""

    def poll(self) -> list[str]:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.offset)
                chunk = log.read(READ_LIMIT)
        except OSError:
            return []
        self.offset += len(chunk)
        text = self.pending + chunk
        complete, _, self.pending = text.rpartition(b"\n")
        return self.phases_in(complete.decode(errors="replace"))

    def phases_in(self, text: str) -> list[str]:
        found: list[str] = []
        for line in text.splitlines():
            for index in range(self.reached, len(PHASES)):
                marker, phase = PHASES[index]
                if marker in line:
                    found.append(phase)
                    self.reached = index + 1
                    break
        return found
