"""The output of a server process started without ng_run, read while it runs (so a chatty server never fills its
pipe and blocks), its last lines kept for an error message."""

from __future__ import annotations

import threading
from collections import deque
from typing import IO

TAIL_LINES = 60
MAX_LINE_CHARS = 2000
READER_EXIT_S = 5.0  # how long to wait for the rest of the output once the process has exited


class OutputTail:
    """Reads `stream` to its end on a thread of its own; `text()` is its last `lines` lines."""

    def __init__(self, stream: IO[bytes], name: str, lines: int = TAIL_LINES) -> None:
        self.lines: deque[str] = deque(maxlen=lines)
        self.finished = threading.Event()
        self._stream = stream
        self._thread = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._stream:
                self.lines.append(raw.decode(errors="replace").rstrip()[:MAX_LINE_CHARS])
        except (OSError, ValueError):  # the pipe broke: nothing more to read
            pass
        finally:
            self._stream.close()  # here, not from another thread: closing a pipe being read would block
            self.finished.set()

    def text(self, wait_s: float = 0.0) -> str:
        """The last lines read, once the output has ended or `wait_s` has passed (a process's children may keep
        the pipe open after it exits)."""
        if wait_s:
            self.finished.wait(wait_s)
        return "\n".join(self.lines)

    def close(self) -> None:
        """Wait a little for the output's end (the reader closes the pipe; a pipe a child of the process still
        holds open is left to the reader, which ends with it)."""
        self.finished.wait(READER_EXIT_S)
