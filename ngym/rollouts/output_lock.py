"""One output, one collector: an exclusive lock on a rollout output for the whole run.

Two collectors on one output (the same command started twice, two `gym eval run --output X`) used to write
every row twice, after which a resume refused the file, and one deleted the other's failures file. The lock is
an flock on `<output>.lock`, so the system drops it when its process ends in any way (kill -9 included): no
stale lock is ever left to clear by hand. The file names its holder (program, pid, host, start time, never the
command line, which can hold secrets), so the refusal says which run holds the output.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType

import orjson

from ngym.config.errors import ConfigError


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


class OutputLock:
    """Held from `acquire` until `release` (or the end of a `with` block, or the process)."""

    def __init__(self, output: Path, path: Path, fd: int) -> None:
        self.output = output
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, output: Path, program: str) -> OutputLock:
        """The lock on `output`, or a ConfigError naming the run that holds it. Nothing else is written."""
        path = lock_path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise ConfigError(
                    f"{output} is being written by another run ({holder}): wait for it to end or stop it, or write "
                    "to another output"
                ) from None
            # The holder removes the file when it ends: what this process locked may be that removed file.
            if _same_file(fd, path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        info = {"program": program, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        os.pwrite(fd, orjson.dumps(info) + b"\n", 0)
        return cls(output, path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        # Removed while still held, so that a run starting now locks a new file, never the removed one.
        if _same_file(self._fd, self.path):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        held, named = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _holder(fd: int) -> str:
    try:
        info = orjson.loads(os.pread(fd, 4096, 0))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        return f"{info['program']}, pid {info['pid']} on {info['host']}, started {started}"
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "one that is starting now"
