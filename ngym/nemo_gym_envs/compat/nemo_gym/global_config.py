"""The run's configuration as NeMo Gym hands it to a server (`get_global_config_dict()`), and the key names of
rollout rows NeMo Gym's environments read."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ._runtime import current, installed

TASK_INDEX_KEY_NAME = "_ng_task_index"
ROLLOUT_INDEX_KEY_NAME = "_ng_rollout_index"
ATTEMPT_INDEX_KEY_NAME = "_ng_attempt_index"
ROLLOUT_ID_KEY_NAME = "_ng_rollout_id"
AGENT_REF_KEY_NAME = "agent_ref"
HEAD_SERVER_KEY_NAME = "head_server"
CACHE_DIR_KEY_NAME = "cache_dir"
POLICY_MODEL_KEY_NAME = "policy_model"
RESULTS_DIR_KEY_NAME = "results_dir"
OBSERVABILITY_ENABLED_KEY_NAME = "observability_enabled"  # model-call capture per rollout (ngym: never set)
TOKEN_ID_CAPTURE_BLOCK = "token_id_capture"  # training token capture (ngym: never set)
SKILLS_REF_KEY_NAME = "skills_ref"


def get_global_config_dict(*_args: Any, **_kwargs: Any) -> DictConfig:
    """This server's view of the run: run-wide settings, its own instance and every other instance's address."""
    config = OmegaConf.create(current().global_config)
    assert isinstance(config, DictConfig)
    return config


def maybe_get_global_config_dict() -> DictConfig | None:
    return get_global_config_dict() if installed() else None


def get_first_server_config_dict(global_config_dict: Any, server_name: str) -> Any:
    """The section of instance `server_name`: `{<type>: {<implementation>: section}}` unwrapped."""
    instance = global_config_dict[server_name]
    by_type = next(iter(instance.values()))
    return next(iter(by_type.values()))
