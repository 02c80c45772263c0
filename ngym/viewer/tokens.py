"""The token view: each model turn's prompt and generated IDs with their log-probabilities, decoded when a
tokenizer is given (`+tokenizer=<model dir>`).

Decoding reads the directory's `tokenizer.json` directly (no tokenizers/transformers in ngym's environment):
byte-level BPE (GPT-2, Llama 3, Qwen) maps each character of a token back to a byte; SentencePiece-style
vocabularies turn `▁` into a space and `<0xNN>` into that byte; added tokens are their content as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ngym.config.errors import ConfigError
from ngym.viewer.rows import output_items, turn_ranges

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's reversible map of bytes to printable characters, as character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = chr(256 + extra)
            extra += 1
    return {char: byte for byte, char in chars.items()}


def _kinds(node: Any) -> set[str]:
    """Every `type` in a tokenizer.json component (decoders and pre-tokenizers nest in Sequences)."""
    if isinstance(node, dict):
        found = {node["type"]} if isinstance(node.get("type"), str) else set()
        for value in node.values():
            found |= _kinds(value)
        return found
    if isinstance(node, list):
        return set().union(*(_kinds(item) for item in node)) if node else set()
    return set()


@dataclass(frozen=True)
class Vocab:
    name: str
    pieces: dict[int, bytes]  # what each token ID writes
    special: frozenset[int]

    @classmethod
    def load(cls, directory: Path, name: str | None = None) -> Vocab:
        path = directory / "tokenizer.json" if directory.is_dir() else directory
        if not path.is_file():
            raise ConfigError(f"+tokenizer={directory}: no tokenizer.json there (give a model directory)")
        try:
            data = orjson.loads(path.read_bytes())
            model = data["model"]
            vocab = model["vocab"]
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"+tokenizer={directory}: cannot read {path}: {exc}") from None
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            vocab = {entry[0]: position for position, entry in enumerate(vocab) if isinstance(entry, list)}
        if not isinstance(vocab, dict):
            raise ConfigError(f"+tokenizer={directory}: {path}: model.vocab is not a mapping of tokens to IDs")
        kinds = _kinds(data.get("decoder")) | _kinds(data.get("pre_tokenizer"))
        decode = (
            _byte_level
            if "ByteLevel" in kinds
            else _sentencepiece
            if kinds & {"Metaspace", "ByteFallback", "Replace"}
            else _plain
        )
        pieces = {token_id: decode(token) for token, token_id in vocab.items() if isinstance(token_id, int)}
        special: set[int] = set()
        for added in data.get("added_tokens") or []:
            if isinstance(added, dict) and isinstance(added.get("id"), int) and isinstance(added.get("content"), str):
                pieces[added["id"]] = added["content"].encode()
                if added.get("special"):
                    special.add(added["id"])
        return cls(name or str(directory), pieces, frozenset(special))

    def text(self, token_id: int) -> str | None:
        piece = self.pieces.get(token_id)
        return None if piece is None else piece.decode("utf-8", errors="backslashreplace")

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a run of IDs (bytes joined first, so characters split over tokens come out whole)."""
        return b"".join(self.pieces.get(token_id, b"") for token_id in ids).decode("utf-8", errors="replace")


_ALPHABET = byte_level_alphabet()


def _byte_level(token: str) -> bytes:
    try:
        return bytes(_ALPHABET[char] for char in token)
    except KeyError:
        return token.encode()


def _sentencepiece(token: str) -> bytes:
    match = _BYTE_PIECE.fullmatch(token)
    if match:
        return bytes([int(match.group(1), 16)])
    return token.replace("▁", " ").encode()


def _plain(token: str) -> bytes:
    return token.encode()


def _shared_prefix(before: Sequence[int], after: Sequence[int]) -> int:
    length = min(len(before), len(after))
    for position in range(length):
        if before[position] != after[position]:
            return position
    return length


def _ints(value: Any) -> list[int]:
    return [v for v in value if isinstance(v, int)] if isinstance(value, list) else []


def token_turns(row: dict[str, Any], vocab: Vocab | None) -> dict[str, Any]:
    """Each turn's new prompt tokens (the part after what the previous turn's prompt and generation already
    hold), its generated tokens and log-probs, and where a prompt stops continuing the previous turn."""
    items = output_items(row)
    turns: list[dict[str, Any]] = []
    seen: list[int] = []
    used: set[int] = set()
    for number, (_start, end) in enumerate(turn_ranges(items), start=1):
        carrier = items[end - 1]
        if "generation_token_ids" not in carrier:
            continue
        prompt = _ints(carrier.get("prompt_token_ids"))
        generated = _ints(carrier.get("generation_token_ids"))
        raw_logprobs = carrier.get("generation_log_probs")
        logprobs = (
            [p if isinstance(p, int | float) else None for p in raw_logprobs] if isinstance(raw_logprobs, list) else []
        )
        shared = _shared_prefix(seen, prompt)
        continues = not seen or shared == len(seen)
        new_prompt = prompt[len(seen) :] if continues else prompt
        turn: dict[str, Any] = {
            "turn": number,
            "item": end - 1,
            "prompt_length": len(prompt),
            "carried": len(seen) if continues else 0,
            "continues": continues,
            "diverges_at": None if continues else shared,
            "prompt": new_prompt,
            "generation": generated,
            "logprobs": logprobs,
        }
        if vocab is not None:
            turn["text"] = vocab.decode(generated)
        turns.append(turn)
        used.update(new_prompt)
        used.update(generated)
        seen = [*prompt, *generated]
    answer: dict[str, Any] = {"tokenizer": vocab.name if vocab else None, "turns": turns}
    if vocab is not None:
        answer["pieces"] = {str(token_id): vocab.text(token_id) for token_id in sorted(used)}
        answer["special"] = sorted(token_id for token_id in used if token_id in vocab.special)
    return answer
