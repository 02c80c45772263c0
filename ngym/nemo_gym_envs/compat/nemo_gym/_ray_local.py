"""A local Ray for the environments whose code runs Ray tasks (code_gen, evalplus, ...), listening on 127.0.0.1.

NeMo Gym starts Ray in every server that does not declare `ray_enabled = False`; ngym does so only when the
server uses Ray and `ray` is installed (ngym installs it when the server's code imports it: `implied.py`). Ray
turns a node address of 127.0.0.1 into the host's outward address unless it believes it runs on a desktop, so
the environment's process is told so (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read when `ray` is imported): then
the GCS, the raylet, the runtime-env agent and the workers all listen on loopback. `RAY_ADDRESS=local` makes
`ray.init()`, and the start Ray makes on a task's first `.remote()`, start a cluster of this process's own rather
than join one found on the machine; usage statistics are off. serve.py applies `LOOPBACK_ENV` before the
environment's code is imported.

Ray's workers import a task's function by its module (`resources_servers.swerl_gen.eval...`, or a sibling file),
so each worker first enters the environment as its server did (`enter_worker`, Ray's worker setup hook): the same
`sys.path`, the tree's packages bound, the environment's folder as working directory.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from ._runtime import current, installed

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node address: 127.0.0.1, not the host's outward address
    "RAY_ADDRESS": "local",  # a Ray of this process's own, never a cluster found on the machine
    "RAY_USAGE_STATS_ENABLED": "0",  # nothing is reported to Ray's servers
}
LOCAL_INIT = {"include_dashboard": False, "_node_ip_address": "127.0.0.1", "ignore_reinit_error": True}
_TREE, _FOLDER = "NGYM_NEMO_GYM_TREE", "NGYM_NEMO_GYM_FOLDER"


def keep_ray_on_loopback(environ: MutableMapping[str, str] | None = None) -> None:
    """Set what keeps a Ray started in this process (and its children) on loopback, over whatever was set."""
    target = os.environ if environ is None else environ
    target.update(LOOPBACK_ENV)


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def server_uses_ray(server_class: type) -> bool:
    """NeMo Gym's rule (Ray unless `ray_enabled = False`), where Ray is installed: a server whose code does not
    import Ray has it only when its own requirements bring it."""
    return getattr(server_class, "ray_enabled", None) is not False and ray_installed()


def initialize_ray(**overrides: Any) -> None:
    """Start this process's local Ray (once), listening on loopback only."""
    import ray

    if ray.is_initialized():
        return
    keep_ray_on_loopback()
    settings: dict[str, Any] = dict(LOCAL_INIT)
    if installed():
        settings["runtime_env"] = worker_runtime_env(current().tree, current().folder)
    ray.init(**{**settings, **overrides})


def worker_runtime_env(tree: Path, folder: Path) -> dict[str, Any]:
    """Ray's runtime environment for this process's workers: they enter the environment before any task. The hook
    is named through ngym's source (on every venv's path by its `.pth`), so a task's own `PYTHONPATH` (swerl_gen
    names a folder of NeMo Gym's container) cannot hide it."""
    return {
        "env_vars": {_TREE: str(tree), _FOLDER: str(folder)},
        "worker_process_setup_hook": "ngym.nemo_gym_envs.compat.nemo_gym._ray_local.enter_worker",
    }


def enter_worker() -> None:
    """In a Ray worker, before any task: the environment's `sys.path`, tree packages and working directory."""
    from ngym.nemo_gym_envs.serve import enter_environment

    tree, folder = Path(os.environ[_TREE]), Path(os.environ[_FOLDER])
    enter_environment(tree, folder)
    os.chdir(folder)
