"""What ng_run hands one replica of a server instance, and what it knows of each instance before starting it.

A server gets its own section, the few run-wide settings servers read and where the other instances listen:
never the whole configuration, so no server holds (or can show) another server's secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ngym.config.errors import ConfigError
from ngym.config.instances import RUN_DIR_KEY, InstanceSpec
from ngym.config.secrets import secret_values
from ngym.http.hosts import ALLOWED_HOSTS_KEY
from ngym.observability.tracing import TRACES_KEY
from ngym.placement.directory import DirectoryEntry, directory_from_config

if TYPE_CHECKING:
    from ngym.nemo_gym_envs.detect import NemoGymEnvironment

HF_TOKEN_KEY = "hf_token"  # NeMo Gym's env.yaml key; local_vllm_model hands it to vLLM
# Top-level keys a server may read (`ServerContext.config.get(...)`); everything else stays with ng_run.
SERVER_SETTINGS = (RUN_DIR_KEY, HF_TOKEN_KEY, ALLOWED_HOSTS_KEY, TRACES_KEY)


class ServerLaunch(BaseModel):
    """Everything one replica needs to start. It travels as JSON on the server process's standard input (and as
    a Ray actor's argument), never in a file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: str
    server_type: str
    implementation: str
    section: dict[str, Any]
    settings: dict[str, Any] = Field(default_factory=dict)
    directory: dict[str, DirectoryEntry] = Field(default_factory=dict)
    replica: int = Field(default=0, ge=0)

    @property
    def spec(self) -> InstanceSpec:
        return InstanceSpec(self.instance, self.server_type, self.implementation, self.section)

    @property
    def label(self) -> str:
        """How ng_run names this replica: the instance, with `#<replica>` when there are several."""
        return replica_label(self.instance, self.replica, int(self.section.get("num_replicas") or 1))

    def config_view(self) -> dict[str, Any]:
        """The configuration as this server sees it: the settings and its own instance, nothing else."""
        return {**self.settings, self.instance: {self.server_type: {self.implementation: self.section}}}

    def secrets(self) -> frozenset[str]:
        return secret_values(self.config_view())


def replica_label(instance: str, replica: int, count: int) -> str:
    return f"{instance}#{replica}" if count > 1 else instance


def server_settings(config: dict[str, Any]) -> dict[str, Any]:
    return {key: config[key] for key in SERVER_SETTINGS if config.get(key) is not None}


def launch_from_config(
    config: dict[str, Any], spec: InstanceSpec, directory: dict[str, DirectoryEntry] | None = None, replica: int = 0
) -> ServerLaunch:
    """The launch of one replica of `spec` (an instance of `config`); the directory defaults to the ports the
    configuration's sections give."""
    return ServerLaunch(
        instance=spec.name,
        server_type=spec.server_type,
        implementation=spec.implementation,
        section=spec.section,
        settings=server_settings(config),
        directory=directory_from_config(config) if directory is None else directory,
        replica=replica,
    )


@dataclass
class PlannedInstance:
    """A checked server instance, before any of its replicas starts."""

    spec: InstanceSpec
    num_replicas: int = 1
    startup_budget_s: float = 0.0  # beyond server_startup_timeout_s (Server.startup_budget_s)
    num_workers: int = 1
    num_cpus: float | None = None
    num_gpus: float | None = None
    resources: dict[str, float] | None = None
    max_restarts: int | None = None  # None: the placement's default (ngym.placement.restarts, ray_actors)
    restart_refill_s: float | None = None  # local processes: None is ngym.placement.restarts' default
    nemo_gym: NemoGymEnvironment | None = None  # a NeMo Gym environment, run on its own venv

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return f"{self.spec.server_type}/{self.spec.implementation}"

    def label(self, replica: int) -> str:
        return replica_label(self.spec.name, replica, self.num_replicas)

    def launch(self, config: dict[str, Any], directory: dict[str, DirectoryEntry], replica: int) -> ServerLaunch:
        return launch_from_config(config, self.spec, directory, replica)

    def ray_keys_set(self) -> list[str]:
        """The keys that only mean something on a Ray cluster, among those this instance sets."""
        keys = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "resources": self.resources,
        }
        return [f"{self.spec.key_path}.{key}" for key, value in keys.items() if value is not None]


def check_local(instances: list[PlannedInstance], ray_key: str) -> None:
    """Ray's per-replica resources have no effect on local processes: say so rather than ignore them."""
    keys = [key for instance in instances for key in instance.ray_keys_set()]
    if keys:
        raise ConfigError(
            f"{', '.join(keys)}: resources for Ray actors, but {ray_key} is not set, so every server runs as a "
            f"local process of ng_run. Set {ray_key} to run on a Ray cluster, or remove the keys."
        )
