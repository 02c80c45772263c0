"""Which server instances of a configuration are NeMo Gym environments, and where their code is.

An instance's code is `<server type>/<implementation>/<entrypoint>` under ngym's repository root when it is there
(so the module paths NeMo Gym and ngym share, `responses_api_agents/simple_agent` and
`responses_api_models/vllm_model`, are always ngym's). Otherwise, for a resources server, it is looked for in the
tree of the config file that set its entrypoint (the folder above `resources_servers/`, as NeMo Gym resolves it),
and the instance is a NeMo Gym environment when its code imports `nemo_gym`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ngym.config.instances import InstanceSpec
from ngym.config.load import Locations

RESOURCES_SERVERS = "resources_servers"


@dataclass(frozen=True)
class NemoGymEnvironment:
    name: str  # the environment's folder name
    tree: Path  # the folder above resources_servers/
    folder: Path  # resources_servers/<name>
    entrypoint: str

    @property
    def app(self) -> Path:
        return self.folder / self.entrypoint


def nemo_gym_environment(spec: InstanceSpec, root: Path, locations: Locations) -> NemoGymEnvironment | None:
    """The NeMo Gym environment `spec` runs, or None when it is one of ngym's servers (or not found)."""
    if spec.server_type != RESOURCES_SERVERS or spec.code_path(root).is_file():
        return None
    config_file = _config_file(locations.of(f"{spec.key_path}.entrypoint"))
    if config_file is None:
        return None
    for tree in config_file.parents:
        code = spec.code_path(tree)
        if code.is_file():
            if "nemo_gym" not in code.read_text(encoding="utf-8", errors="replace"):
                return None
            return NemoGymEnvironment(spec.implementation, tree, code.parent, spec.entrypoint)
    return None


def _config_file(where: str | None) -> Path | None:
    """The file of a location written "path:line" (None for the command line)."""
    if not where:
        return None
    path, _, line = where.rpartition(":")
    if not line.isdigit():
        return None
    candidate = Path(path)
    return candidate.resolve() if candidate.is_file() else None
