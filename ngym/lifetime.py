"""A child process that must not outlive its parent: ng_run under a tool or a trainer, each server under ng_run.

The parent puts its pid in NGYM_PARENT_PID; the child calls die_with_parent() first thing, asking Linux to
SIGTERM it when the parent dies in any way, SIGKILL included. (A preexec_fn would do it in the fork, but that is
unsafe in a parent with threads, which every trainer has.)
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_PID_ENV = "NGYM_PARENT_PID"


def die_with_parent(parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)  # the parent died before we asked


def die_with_parent_if_asked() -> None:
    parent = os.environ.get(PARENT_PID_ENV)
    if parent:
        die_with_parent(int(parent))


def child_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child that must die with this process."""
    return {**(environ if environ is not None else os.environ), PARENT_PID_ENV: str(os.getpid())}
