"""The policy's architecture: a tiny Qwen2 that vLLM's CPU backend serves (head_dim 64)."""

from __future__ import annotations

from typing import Any

HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 3
NUM_HEADS = 2  # head_dim 64 (vLLM's CPU attention serves 32 too, which trained worse here)
NUM_KV_HEADS = 2
MAX_POSITIONS = 1024


def qwen2_config(vocab_size: int, eos_id: int, pad_id: int) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        architectures=["Qwen2ForCausalLM"],
    )
