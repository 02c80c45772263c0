"""Tests wait for a state (a row written, a request held, a process gone), never for a length of time. The
timeout here is a hang guard only: when it runs out, or when the process the test drives exits first, the test
fails with what that process printed."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

POLL_S = 0.05


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = 120.0, process: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            stdout, stderr = process.communicate()
            raise AssertionError(f"the process exited ({process.returncode}) before {what}:\n{stdout}{stderr}")
        if time.monotonic() > deadline:
            output = ""
            if process is not None:
                process.kill()
                stdout, stderr = process.communicate()
                output = f"; it was killed, its output:\n{stdout}{stderr}"
            raise AssertionError(f"still waiting for {what} after {timeout:g} s{output}")
        time.sleep(POLL_S)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts until its parent reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def line_count(path: Path) -> int:
    """Whole lines in a file that may not exist yet."""
    return path.read_bytes().count(b"\n") if path.is_file() else 0
