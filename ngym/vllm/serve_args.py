"""`vllm_serve_kwargs` (NeMo Gym's key) as `vllm serve` flags, and which GPUs each instance gets.

`{tensor_parallel_size: 2, trust_remote_code: true, enable_prefix_caching: false, model_loader_extra_config:
{num_threads: 16}}` -> `--tensor-parallel-size 2 --trust-remote-code --no-enable-prefix-caching
--model-loader-extra-config '{"num_threads": 16}'`. Pure functions: tested without vLLM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from ngym.config.errors import ConfigError

# Set by the launcher for each instance: a user value would be silently overridden, so it is refused.
LAUNCHER_OWNED = frozenset({"model", "host", "port", "api_key", "uds"})
# NeMo Gym's Ray-only settings: its local_vllm_model always runs vLLM on Ray; ngym runs it as a local process.
RAY_ONLY = frozenset({"distributed_executor_backend", "data_parallel_backend", "data_parallel_size_local"})
GPU_COUNT_KEYS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def serve_flags(kwargs: Mapping[str, Any], where: str) -> list[str]:
    """The flags for `vllm serve`; `where` names the config key in errors."""
    flags: list[str] = []
    for key, value in kwargs.items():
        if key in LAUNCHER_OWNED:
            raise ConfigError(
                f"{where}.{key}: set by local_vllm_model for each instance "
                f"({'use the model key' if key == 'model' else 'remove it'})"
            )
        flag = "--" + key.replace("_", "-")
        if value is None or key in RAY_ONLY:
            continue
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, dict | list):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def gpus_per_instance(kwargs: Mapping[str, Any]) -> int:
    count = 1
    for key in GPU_COUNT_KEYS:
        value = kwargs.get(key) or 1
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"vllm_serve_kwargs.{key} must be a positive integer, got {value!r}")
        count *= value
    return count


def visible_gpus(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists, else none (CPU)."""
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [device.strip() for device in listed.split(",") if device.strip() and device.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def split_gpus(gpus: Sequence[str], instances: int, per_instance: int, where: str) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each instance (None on a machine without GPUs: vLLM's CPU build)."""
    if not gpus:
        return [None] * instances
    needed = instances * per_instance
    if needed > len(gpus):
        raise ConfigError(
            f"{where}: {instances} instance(s) x {per_instance} GPU(s) each (tensor x pipeline x data parallel) "
            f"need {needed} GPUs; this machine has {len(gpus)} ({', '.join(gpus)})"
        )
    return [",".join(gpus[i * per_instance : (i + 1) * per_instance]) for i in range(instances)]
