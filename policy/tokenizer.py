"""A byte-level BPE tokenizer trained on the synthetic conversations, saved as a Qwen2 tokenizer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ngym.testing.hf_model_files import QWEN2_SPLIT_PATTERN, SPECIAL_TOKENS, write_tokenizer_config
from policy.template import CHAT_TEMPLATE, TAG_TOKENS

# Training also cuts letters off the space or quote before them, so no merge joins the two: a city then has
# the same tokens after a space (" Paris" in the question) as after a quote ("Paris" in the JSON call), and
# copying it is copying token for token, which a tiny model can learn for names it has never seen.
LETTERS_APART = r"\p{L}+"

Merge = tuple[str, str]


def _pre_tokenizer(letters_apart: bool) -> Any:
    from tokenizers import Regex, pre_tokenizers

    splits = [pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False)]
    if letters_apart:
        splits.append(pre_tokenizers.Split(Regex(LETTERS_APART), behavior="isolated", invert=False))
    return pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _build(vocab: dict[str, int], merges: list[Merge], letters_apart: bool) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = _pre_tokenizer(letters_apart)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return tokenizer


def _train_bpe(texts: list[str], vocab_size: int) -> tuple[dict[str, int], list[Merge]]:
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = _pre_tokenizer(letters_apart=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return dict(model["vocab"]), [(a, b) for a, b in model["merges"]]


def _prune(vocab: dict[str, int], merges: list[Merge], counts: Counter[str], min_count: int) -> set[str]:
    """Merged tokens the training data (almost) never holds, and what to remove so that they stop being dead.

    BPE keeps intermediate tokens ("ame" on the way to "name") that the final tokenisation of the training
    text never yields; a held-out city containing one would need an embedding that was never trained. Such a
    token keeps its place when the merges that swallow it go ("name" is then "n" + "ame"); a token that is
    merely rare goes itself.
    """
    remove: set[str] = set()
    for a, b in merges:
        token = a + b
        if counts[token] >= min_count:
            continue
        swallowers = {x + y for x, y in merges if token in (x, y) and counts[x + y] >= min_count}
        remove |= swallowers or {token}
    return remove - set(SPECIAL_TOKENS)


def _without(vocab: dict[str, int], merges: list[Merge], remove: set[str]) -> tuple[dict[str, int], list[Merge]]:
    gone = set(remove)
    kept: list[Merge] = []
    for a, b in merges:  # merges come in creation order, so inputs are judged before the tokens built on them
        if a + b in gone or a in gone or b in gone:
            gone.add(a + b)
        else:
            kept.append((a, b))
    tokens = sorted((i, t) for t, i in vocab.items() if t not in gone)
    return {t: new_id for new_id, (_, t) in enumerate(tokens)}, kept


def train_tokenizer(texts: list[str], vocab_size: int, min_count: int, out_dir: Path, max_length: int) -> Any:
    """Train, prune dead merges, save tokenizer.json and the Qwen2 tokenizer config; return the tokenizer."""
    vocab, merges = _train_bpe(texts, vocab_size)
    while True:
        encodings = _build(vocab, merges, letters_apart=True).encode_batch(texts)
        counts = Counter(token for encoding in encodings for token in encoding.tokens)
        remove = _prune(vocab, merges, counts, min_count)
        if not remove:
            break
        vocab, merges = _without(vocab, merges, remove)
    # Saved with Qwen2's own pre-tokeniser: with no merge across a letter boundary, both split alike.
    tokenizer = _build(vocab, merges, letters_apart=False)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    write_tokenizer_config(out_dir, CHAT_TEMPLATE, max_length)
    return tokenizer
