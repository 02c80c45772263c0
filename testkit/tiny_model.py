"""Generate a tiny, deterministic Qwen2 model that real vLLM (CPU build) can serve in tests.

Run from the repository root with the vLLM venv's interpreter: ``.venv-vllm/bin/python -m testkit.tiny_model
OUT_DIR``. torch/transformers/tokenizers are imported lazily, so the torch-less main venv can import this module
and call :func:`ensure_tiny_model`, which shells out.

The weights are random (seeded): the model babbles, and tests force exact text with vLLM's structured outputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from testkit.hf_model_files import (
    QWEN2_SPLIT_PATTERN,
    SPECIAL_TOKENS,
    Qwen2Shape,
    qwen2_config,
    write_generation_config,
    write_tokenizer_config,
)

# Bump when the generated files change, so stale caches are rebuilt.
FORMAT_VERSION = "ngym-tiny-qwen2-v3"
COMPLETE_MARKER = ".ngym-tiny-model-complete"
# Name to pass as --served-model-name, so requests and recordings do not depend on the model's path.
SERVED_MODEL_NAME = "tiny-qwen2"
SEED = 20240601

HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 2
NUM_HEADS = 2  # head_dim 64: vLLM's CPU attention refuses head_dim 16
NUM_KV_HEADS = 2
MAX_POSITIONS = 32768  # long enough for NeMo Gym environments with many tools (workplace_assistant: 9k tokens)
SHAPE = Qwen2Shape(HIDDEN_SIZE, INTERMEDIATE_SIZE, NUM_LAYERS, NUM_HEADS, NUM_KV_HEADS, MAX_POSITIONS)
BPE_VOCAB_SIZE = 1200

# Not "special": they must survive detokenisation (skip_special_tokens) for the hermes / deepseek_r1 parsers.
ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>", "</tool_response>"]

CORPUS = [
    "What is the weather like in San Francisco today?",
    "The weather in SF is sunny and mild, with a light breeze from the bay.",
    "Is it raining in Seattle? It is cloudy and raining in Seattle.",
    "New York is cold and windy; Boston has snow; Chicago is freezing.",
    "Tokyo, Paris, London, Berlin, Sydney, Toronto, Mumbai, Cairo, Rome and Madrid.",
    "The forecast for Los Angeles: hot, dry, clear skies, temperature 30 degrees.",
    "Humidity, wind speed, rain, snow, fog, storm, thunder, sunshine, cloudy, overcast.",
    "I should call the get_weather tool with the city name.",
    'get_weather {"city": "SF"} {"city": "San Francisco"} {"city": "Seattle"}',
    '{"name": "get_weather", "arguments": {"city": "SF"}}',
    '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}',
    '{"city": "Paris", "weather_description": "light rain, 12 degrees"}',
    '[{"a": 1, "b": [true, false, null]}, {"c": "d"}]',
    "Hello! How can I help you? Thank you, goodbye.",
    "You are a helpful assistant. Answer briefly and call tools when needed.",
    "Let me think about this step by step. First, check the city. Then answer.",
    "The answer is 42. The user wants to know the weather.",
    "# Tools\n\nYou may call functions. Return a JSON object per call.",
    "0 1 2 3 4 5 6 7 8 9 10 20 30 40 50 60 70 80 90 100",
]

# Hermes/Qwen-style ChatML. Reasoning is rendered as <think>..</think> with nothing added around it, so a
# history message renders to exactly the text the model generated. vLLM 0.32 hands the template both
# `reasoning` and `reasoning_content`, filled from the request message's `reasoning` only.
# No for-loop over message content, so vLLM detects the "string" content format (as for Qwen's own
# templates) and joins text parts with "\n" itself; the filter chain only serves callers that pass parts.
CHAT_TEMPLATE = r"""{%- macro text_of(c) -%}
{%- if c is string -%}{{ c }}{%- elif c -%}
{{- c | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\n') -}}
{%- endif -%}
{%- endmacro -%}
{%- if messages and messages[0].role in ['system', 'developer'] -%}
{%- set system_text = text_of(messages[0].content) -%}
{%- set body = messages[1:] -%}
{%- else -%}
{%- set system_text = '' -%}
{%- set body = messages -%}
{%- endif -%}
{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if system_text -%}{{- system_text + '\n\n' -}}{%- endif -%}
{{- '# Tools\n\nFunctions you can call are listed as JSON signatures inside <tools></tools>:\n<tools>' -}}
{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\n</tools>\n\nTo call a function, reply with a JSON object holding its name and arguments inside '
    '<tool_call></tool_call> tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}'
    '\n</tool_call><|im_end|>\n' -}}
{%- elif system_text -%}
{{- '<|im_start|>system\n' + system_text + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in body -%}
{%- if message.role == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}
{%- set reasoning = message.reasoning_content if message.reasoning_content is string else
    (message.reasoning if message.reasoning is string else '') -%}
{%- if reasoning -%}{{- '<think>' + reasoning + '</think>' -}}{%- endif -%}
{%- set content = text_of(message.content) -%}
{{- content -}}
{%- if message.tool_calls -%}
{%- for call in message.tool_calls -%}
{%- set fn = call.function if call.function is defined else call -%}
{%- if content or not loop.first -%}{{- '\n' -}}{%- endif -%}
{{- '<tool_call>\n{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}
{{- '}\n</tool_call>' -}}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{{- '<|im_start|>tool\n<tool_response>\n' + text_of(message.content) + '\n</tool_response><|im_end|>\n' -}}
{%- else -%}
{%- set role = 'system' if message.role == 'developer' else message.role -%}
{{- '<|im_start|>' + role + '\n' + text_of(message.content) + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""


def is_complete(out_dir: Path) -> bool:
    marker = out_dir / COMPLETE_MARKER
    return marker.is_file() and marker.read_text().strip() == FORMAT_VERSION


def _build_tokenizer(out_dir: Path) -> dict[str, int]:
    """Train the byte-level BPE tokenizer, write its files, and return its vocabulary (token -> id)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    # transformers 5 loads a qwen2 model's tokenizer as Qwen2Tokenizer, which imposes this normaliser and
    # pre-tokeniser whatever tokenizer.json says; train with the same ones so both agree on every id.
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    tokenizer.save(str(out_dir / "tokenizer.json"))

    write_tokenizer_config(out_dir, CHAT_TEMPLATE, MAX_POSITIONS)
    vocab: dict[str, int] = tokenizer.get_vocab(with_added_tokens=True)
    return vocab


def _build_model(out_dir: Path, token_id: dict[str, int]) -> None:
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(qwen2_config(SHAPE, token_id)).to(torch.bfloat16)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    write_generation_config(out_dir, token_id)


def build_tiny_model(out_dir: Path) -> Path:
    """Write the model to ``out_dir`` atomically (temp dir, then rename); skip if already complete."""
    out_dir = out_dir.resolve()
    if is_complete(out_dir):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        _build_model(tmp, _build_tokenizer(tmp))
        (tmp / COMPLETE_MARKER).write_text(FORMAT_VERSION + "\n")
        if out_dir.exists():
            if is_complete(out_dir):  # another process won the race
                return out_dir
            shutil.rmtree(out_dir)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not is_complete(out_dir):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_tiny_model(path: Path, python: Path) -> Path:
    """Make sure the tiny model exists at ``path``, generating it with ``python`` (the vLLM venv's)."""
    path = Path(path).resolve()
    if is_complete(path):
        return path
    proc = subprocess.run(
        [str(python), "-m", "testkit.tiny_model", str(path)],
        cwd=Path(__file__).resolve().parents[1],  # the repository root: the vLLM venv does not install ngym
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not is_complete(path):
        raise RuntimeError(
            f"generating the tiny model with {python} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m testkit.tiny_model OUT_DIR", file=sys.stderr)
        return 2
    print(build_tiny_model(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
