"""The policy's architecture: a tiny Qwen2 that vLLM's CPU backend serves."""

from __future__ import annotations

from typing import Any

from testkit.hf_model_files import Qwen2Shape, qwen2_config

MAX_POSITIONS = 1024
# head_dim 64 (vLLM's CPU attention serves 32 too, which trained worse here: policy/README.md)
SHAPE = Qwen2Shape(
    hidden_size=128, intermediate_size=256, num_layers=3, num_heads=2, num_kv_heads=2, max_positions=MAX_POSITIONS
)


def policy_config(vocab: dict[str, int]) -> Any:
    return qwen2_config(SHAPE, vocab)
