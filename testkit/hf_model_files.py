"""The Hugging Face files of a tiny Qwen2 chat model that vLLM serves: tokenizer config, model config,
generation config. Shared by the random test model (tiny_model) and the trained weather policy (policy/).

Stdlib only at import time (transformers is imported where a config is built): tiny_model runs as a plain
script under the vLLM venv, and the policy imports this from the repository root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
# Qwen2's pre-tokenisation regex: transformers loads a qwen2 model's tokenizer as Qwen2Tokenizer, which
# applies this pattern (and NFC) whatever tokenizer.json says, so a tokenizer must be trained with it too.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class Qwen2Shape:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int  # head_dim = hidden_size / num_heads: vLLM's CPU attention refuses 16, serves 32 and 64
    num_kv_heads: int
    max_positions: int


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_tokenizer_config(out_dir: Path, chat_template: str, max_length: int) -> None:
    """tokenizer_config.json and special_tokens_map.json for a ChatML Qwen2 tokenizer (tokenizer.json apart)."""
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "errors": "replace",
        "chat_template": chat_template,
    }
    write_json(out_dir / "tokenizer_config.json", config)
    write_json(out_dir / "special_tokens_map.json", {"eos_token": IM_END, "pad_token": ENDOFTEXT})


def qwen2_config(shape: Qwen2Shape, vocab: dict[str, int]) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None,
        eos_token_id=vocab[IM_END],
        pad_token_id=vocab[ENDOFTEXT],
        architectures=["Qwen2ForCausalLM"],
    )


def write_generation_config(out_dir: Path, vocab: dict[str, int]) -> None:
    # No sampling defaults: vLLM would otherwise apply generation_config values to every request.
    write_json(out_dir / "generation_config.json", {"eos_token_id": vocab[IM_END], "pad_token_id": vocab[ENDOFTEXT]})
