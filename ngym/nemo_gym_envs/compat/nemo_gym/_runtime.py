"""What an environment's process knows of its run, set once by ngym.nemo_gym_envs.serve before the environment's
code is imported: its instance name, its NeMo Gym tree, the configuration as NeMo Gym shows it to a server, where
the other servers listen, and the listening socket ng_run passed it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Runtime:
    name: str
    tree: Path  # the folder above resources_servers/ (NeMo Gym's PARENT_DIR)
    folder: Path  # the environment's own folder (its working directory)
    global_config: dict[str, Any]
    urls: dict[str, str] = field(default_factory=dict)  # instance name -> base URL of its first replica
    fd: int | None = None  # the listening socket's file descriptor


_installed: list[Runtime] = []  # at most one, written once per process


def install(runtime: Runtime) -> None:
    if _installed:
        raise RuntimeError("the nemo_gym runtime of this process is already installed")
    _installed.append(runtime)


def current() -> Runtime:
    if not _installed:
        raise RuntimeError(
            "nemo_gym (ngym's compatibility package) runs inside an environment process started by ng_run; "
            "no runtime is installed in this process"
        )
    return _installed[0]


def installed() -> bool:
    return bool(_installed)


def tree_root() -> Path:
    return current().tree if _installed else Path.cwd()
