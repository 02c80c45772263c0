"""Which server instances of a configuration are NeMo Gym servers (environments and agents), and where their
code is.

An instance's code is `<server type>/<implementation>/<entrypoint>` under ngym's repository root when it is there
(so the module paths NeMo Gym and ngym share, `responses_api_agents/simple_agent` and
`responses_api_models/vllm_model`, are always ngym's). Otherwise, for a resources server or an agent, it is looked
for in the tree of the config file that set its entrypoint (the folder above `resources_servers/` and
`responses_api_agents/`, as NeMo Gym resolves it), and the instance is a NeMo Gym server when its code imports
`nemo_gym`. ngym.config.instances does not import this module: ng_run's supervisor hands it `is_nemo_gym_server`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ngym.config.instances import InstanceSpec
from ngym.config.load import Locations

RESOURCES_SERVERS = "resources_servers"
AGENTS = "responses_api_agents"
# The server types whose NeMo Gym implementations run on ngym's `nemo_gym` (model servers are always ngym's).
NEMO_GYM_SERVER_TYPES = (RESOURCES_SERVERS, AGENTS)


@dataclass(frozen=True)
class NemoGymServer:
    name: str  # the server's folder name (an environment's, or an agent's such as gymnasium_agent)
    tree: Path  # the folder above resources_servers/ and responses_api_agents/
    folder: Path  # <server type>/<name>
    entrypoint: str
    server_type: str = RESOURCES_SERVERS

    @property
    def app(self) -> Path:
        return self.folder / self.entrypoint

    @property
    def is_agent(self) -> bool:
        return self.server_type == AGENTS


NemoGymEnvironment = NemoGymServer  # the name ngym.placement.spec knows it by


def nemo_gym_server(spec: InstanceSpec, root: Path, locations: Locations) -> NemoGymServer | None:
    """The NeMo Gym server `spec` runs, or None when it is one of ngym's servers (or not found)."""
    if spec.server_type not in NEMO_GYM_SERVER_TYPES or spec.code_path(root).is_file():
        return None
    config_file = _config_file(locations.of(f"{spec.key_path}.entrypoint"))
    if config_file is None:
        return None
    for tree in config_file.parents:
        code = spec.code_path(tree)
        if code.is_file():
            if "nemo_gym" not in code.read_text(encoding="utf-8", errors="replace"):
                return None
            return NemoGymServer(spec.implementation, tree, code.parent, spec.entrypoint, spec.server_type)
    return None


def is_nemo_gym_server(spec: InstanceSpec, root: Path, locations: Locations) -> bool:
    """Whether `spec`'s code is NeMo Gym's, found in its config file's tree (ngym.config.instances' question)."""
    return nemo_gym_server(spec, root, locations) is not None


def _config_file(where: str | None) -> Path | None:
    """The file of a location written "path:line" (None for the command line)."""
    if not where:
        return None
    path, _, line = where.rpartition(":")
    if not line.isdigit():
        return None
    candidate = Path(path)
    return candidate.resolve() if candidate.is_file() else None
