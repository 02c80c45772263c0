"""The pure parts of launching vLLM: vllm_serve_kwargs as flags, GPUs per instance, start-up phases from a log."""

from __future__ import annotations

from pathlib import Path

import pytest

from ngym.config.errors import ConfigError
from ngym.vllm.progress import PHASES, StartupProgress
from ngym.vllm.serve_args import gpus_per_instance, serve_flags, split_gpus, visible_gpus
from responses_api_models.local_vllm_model.app import LocalVllmModelConfig


def test_kwargs_become_vllm_serve_flags() -> None:
    flags = serve_flags(
        {
            "tensor_parallel_size": 2,
            "trust_remote_code": True,
            "enable_prefix_caching": False,
            "model_loader_extra_config": {"num_threads": 16},
            "served_model_name": "policy",
            "quantization": None,
            "distributed_executor_backend": "ray",  # NeMo Gym's Ray-only setting: ngym runs vLLM as a process
        },
        "vllm_serve_kwargs",
    )
    assert flags == [
        "--tensor-parallel-size", "2", "--trust-remote-code", "--no-enable-prefix-caching",
        "--model-loader-extra-config", '{"num_threads": 16}', "--served-model-name", "policy",
    ]  # fmt: skip


@pytest.mark.parametrize("key", ["model", "port", "host", "api_key"])
def test_what_the_launcher_sets_is_refused_by_name(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"vllm_serve_kwargs\.{key}: set by local_vllm_model"):
        serve_flags({key: "x"}, "vllm_serve_kwargs")


def test_instances_split_the_visible_gpus() -> None:
    kwargs = {"tensor_parallel_size": 2, "pipeline_parallel_size": 1, "data_parallel_size": 1}
    assert gpus_per_instance(kwargs) == 2
    assert split_gpus(["0", "1", "2", "3"], 2, 2, "x") == ["0,1", "2,3"]
    assert split_gpus([], 3, 2, "x") == [None, None, None], "no GPU: vLLM's CPU build, nothing to split"
    with pytest.raises(ConfigError, match=r"2 instance\(s\) x 4 GPU\(s\) each .* need 8 GPUs; this machine has 4"):
        split_gpus(["0", "1", "2", "3"], 2, 4, "policy_model")
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_start_up_phases_are_read_from_the_log_as_it_grows(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    progress = StartupProgress(log)
    assert progress.poll() == [], "no log yet"
    log.write_text(f"(EngineCore pid=1) INFO {PHASES[0][0]}: model=...\n(Worker pid=2) INFO {PHASES[1][0]} m...")
    assert progress.poll() == [PHASES[0][1]], "a line not yet ended waits"
    with log.open("a") as out:
        out.write(f"\nINFO {PHASES[2][0]} 0.01 seconds\nINFO {PHASES[4][0]}.\n")
    assert progress.poll() == [PHASES[1][1], PHASES[2][1], PHASES[4][1]]
    assert progress.poll() == []


def test_config_keys_after_nemo_gyms_and_a_base_url_launches_nothing() -> None:
    launched = LocalVllmModelConfig.model_validate(
        {"model": "Qwen/Qwen3-8B", "num_instances": 2, "vllm_serve_kwargs": {"served_model_name": ["q", "r"]}}
    )
    assert launched.launches and launched.served_model_name == "q" and len(launched.base_urls) == 2
    external = LocalVllmModelConfig.model_validate({"model": "m", "base_url": "http://127.0.0.1:8000/v1"})
    assert not external.launches and external.base_urls == ["http://127.0.0.1:8000/v1"]
    with pytest.raises(ValueError, match=r"vllm_serve_kwargs\.port: set by local_vllm_model"):
        LocalVllmModelConfig.model_validate({"model": "m", "vllm_serve_kwargs": {"port": 8000}})
    with pytest.raises(ValueError, match="vllm_python or ray_worker_py_executable"):
        LocalVllmModelConfig.model_validate({"model": "m", "vllm_python": "a", "ray_worker_py_executable": "b"})
