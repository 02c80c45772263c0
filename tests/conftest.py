"""Session fixtures for tests against a real vLLM server (CPU build in .venv-vllm) on a generated tiny model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ngym.vllm.process import VllmServer, find_vllm_python
from testkit.forcing import STRUCTURED_OUTPUTS_IN_REASONING
from testkit.tiny_model import SERVED_MODEL_NAME, ensure_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL_DIR = REPO_ROOT / ".cache" / "tiny-model"


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    python = find_vllm_python(REPO_ROOT)
    if python is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test against real vLLM, but {REPO_ROOT / '.venv-vllm/bin/python'} is absent")
        pytest.skip(f"real vLLM is not installed: {REPO_ROOT / '.venv-vllm/bin/python'} is absent")
    return python


@pytest.fixture(scope="session")
def tiny_model_dir(vllm_python: Path) -> Path:
    """The tiny Qwen2 model, generated once into .cache/tiny-model (reused across runs)."""
    return ensure_tiny_model(TINY_MODEL_DIR, vllm_python)


def running_tiny_vllm(model_dir: Path, python: Path, log_dir: Path, **settings: Any) -> Iterator[VllmServer]:
    """A real vLLM on the tiny model, served as ``tiny-qwen2`` with the hermes tool parser and the deepseek_r1
    reasoning parser, stopped when the generator is closed."""
    server = VllmServer(model_dir, python=python, served_model_name=SERVED_MODEL_NAME, tool_call_parser="hermes",
                        reasoning_parser="deepseek_r1", log_path=log_dir / "vllm.log", **settings)  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_server(
    vllm_python: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """One real vLLM for the whole session: structured outputs allowed inside <think>, the token endpoints
    (--enable-scale-out), chat templates sent with a request allowed (tests of templates that rewrite history),
    max-model-len 1024."""
    extra = (*STRUCTURED_OUTPUTS_IN_REASONING, "--enable-scale-out", "--trust-request-chat-template")
    yield from running_tiny_vllm(tiny_model_dir, vllm_python, tmp_path_factory.mktemp("vllm"), extra_args=extra)


@pytest.fixture(scope="session")
def long_context_vllm_server(
    vllm_python: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """A second real vLLM with max-model-len 16384: for NeMo Gym environments whose prompts carry many tools
    (workplace_assistant's 27 tools are 9k tokens of the tiny model's small vocabulary). Its KV cache is a few
    MiB; only the tests that need it start it."""
    log_dir = tmp_path_factory.mktemp("vllm-long")
    extra = STRUCTURED_OUTPUTS_IN_REASONING
    yield from running_tiny_vllm(tiny_model_dir, vllm_python, log_dir, max_model_len=16384, extra_args=extra)
