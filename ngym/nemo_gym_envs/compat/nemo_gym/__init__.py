"""ngym's implementation of the `nemo_gym` names NeMo Gym's resources servers and agents import.

Importable as `nemo_gym` only inside an environment's process (ngym.nemo_gym_envs.serve puts its parent folder on
`sys.path`); the modules import each other relatively, so they also load as `ngym.nemo_gym_envs.compat.nemo_gym`
for type checks. Unlike NeMo Gym's package, importing it starts nothing and changes neither `print` nor `sys.path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._runtime import tree_root

__all__ = ["CACHE_DIR", "PARENT_DIR"]


def __getattr__(name: str) -> Any:
    # Resolved when read: the environment's tree is known once its process has installed its runtime.
    if name == "PARENT_DIR":
        return tree_root()
    if name == "CACHE_DIR":
        return tree_root() / "cache"
    raise AttributeError(f"module 'nemo_gym' has no attribute {name!r} (ngym does not provide it)")


def _resolve_under_cwd_or_install(path: str | Path) -> Path:
    """A relative path: under the working directory when it exists there, else under the environment's tree."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return tree_root() / candidate
