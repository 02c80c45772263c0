"""`python -m ngym.vllm.watchdog CMD...`: run CMD as the leader of a process group that dies with its owner.

The owner holds the write end of our stdin; when it closes (the owner exited or was killed, SIGKILL included),
the whole group (vLLM's API server and its engine-core children) is stopped. Stdlib only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

STOP_GRACE_SECONDS = 15.0


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_group(pgid: int, grace: float, leader_alive: Callable[[], bool]) -> None:
    """SIGTERM the group, wait up to ``grace`` for its leader, then SIGKILL whatever is left of the group."""
    if signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace
        while leader_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    # Engine-core children can outlive the api server: always sweep the whole group.
    signal_group(pgid, signal.SIGKILL)


def watchdog(cmd: list[str]) -> int:
    """Run ``cmd``; if our stdin reaches EOF (the owner died) first, kill our whole process group."""
    # stop() signals the whole group: outlive vLLM so the owner's wait on us measures vLLM's shutdown.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    owner_gone = threading.Event()

    def wait_for_eof() -> None:
        while sys.stdin.buffer.read(65536):
            pass
        owner_gone.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    while not owner_gone.wait(0.5):
        code = child.poll()
        if code is not None:
            return code if code >= 0 else 128 - code
    stop_group(os.getpgid(0), STOP_GRACE_SECONDS, lambda: child.poll() is None)
    return 1


if __name__ == "__main__":
    # os._exit: a normal interpreter shutdown aborts while the daemon thread is blocked reading stdin.
    os._exit(watchdog(sys.argv[1:]))
