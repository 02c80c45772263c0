"""The policy's tokenizer: whole tokens for the conversation's own words, single letters for names.

A city the policy has never seen must come out of the tokenizer as tokens it has copied many times. BPE cuts a
name into fragments learned from other text ("T" "ash" "k" "ent"), so an unseen name is a new mix of
fragments, each trained on few copies. Here no merge ever joins two letters: every name is spelt letter by
letter, alike after a space in the question and after a quote in the JSON call, and copying any name is the
same skill, which every training row exercises. The words around the names ("weather", "arguments",
"get_weather"...) are added tokens that match whole words only (`single_word`), so they stay one token each
and never match inside a name; BPE merges join punctuation only (`":"`, `{"`, `"}}\\n`...).

The weather words (" sunny", " cold"...) are one token with the space before them, as in a usual BPE: the answer
copies the word from the tool result, and "is" followed by one token to copy is a far easier lookup than "is",
a space shared by every word, then the word. (`single_word` cannot carry a leading space, so these match
anywhere; only a lower-case name that starts with a whole weather word, " sunnyvale", would lose its letters.)

It has to be built from those parts: vLLM loads the tokenizer with transformers, whose Qwen2Tokenizer rebuilds
the BPE from tokenizer.json's vocabulary, merges and added tokens with Qwen2's own pre-tokeniser and nothing
else (an `ignore_merges` word vocabulary, for one, would be dropped).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from policy.data import CONDITIONS
from policy.template import CHAT_TEMPLATE, TAG_TOKENS
from testkit.hf_model_files import QWEN2_SPLIT_PATTERN, SPECIAL_TOKENS, write_tokenizer_config

# What the added-token matcher counts as a word when it checks `single_word` boundaries (a regex \w run).
WORD = re.compile(r"\w+")
# How often a city occurs in one conversation (question, call, tool result twice, answer): a word of a name
# counts this many times against the same word in the surrounding text.
NAME_OCCURRENCES = 5
PUNCTUATION_MERGES = 120
_TAGS = re.compile("|".join(re.escape(t) for t in (*SPECIAL_TOKENS, *TAG_TOKENS)))


def _has_letter(piece: str) -> bool:
    """Whether a byte-level piece holds a letter ("Ġ" and "Ċ", the space and the newline, look like letters)."""
    return any(char.isalpha() for char in piece.replace("Ġ", "").replace("Ċ", ""))


def _pre_tokenizer() -> Any:
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def vocabulary_words(texts: Iterable[str], names: Iterable[str], min_count: int) -> list[str]:
    """Words of at least two characters seen `min_count` times in the texts outside the names."""
    counts: Counter[str] = Counter()
    for text in texts:
        for segment in _TAGS.split(text):
            counts.update(WORD.findall(segment))
    in_names: Counter[str] = Counter()
    for name in names:
        in_names.update(WORD.findall(name))
    return sorted(w for w, c in counts.items() if len(w) > 1 and c - NAME_OCCURRENCES * in_names[w] >= min_count)


def _punctuation_pieces(texts: Iterable[str], words: list[str]) -> Iterable[str]:
    """The pre-tokenised pieces BPE sees once tags and whole words are cut out, those without a letter."""
    by_length = sorted(words, key=len, reverse=True)
    cut = re.compile(_TAGS.pattern + r"|(?<!\w)(?:" + "|".join(re.escape(w) for w in by_length) + r")(?!\w)")
    pre_tokenizer = _pre_tokenizer()
    for text in texts:
        for segment in cut.split(text):
            if segment:
                yield from (piece for piece, _ in pre_tokenizer.pre_tokenize_str(segment) if not _has_letter(piece))


def _punctuation_bpe(pieces: Iterable[str], min_count: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    import json

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    trainer = trainers.BpeTrainer(
        vocab_size=256 + PUNCTUATION_MERGES,
        min_frequency=min_count,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]+"), behavior="isolated")  # a piece is one word
    bpe.train_from_iterator(pieces, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    return dict(model["vocab"]), [(a, b) for a, b in model["merges"]]


def build_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], words: list[str], spaced_words: tuple[str, ...]
) -> Any:
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = _pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    tokenizer.add_tokens([AddedToken(w, single_word=True, special=False, normalized=False) for w in words])
    tokenizer.add_tokens([AddedToken(" " + w, special=False, normalized=False) for w in spaced_words])
    return tokenizer


def train_tokenizer(texts: list[str], names: list[str], min_count: int, out_dir: Path, max_length: int) -> Any:
    """Build the tokenizer from the conversations, save tokenizer.json and its config; return it."""
    words = vocabulary_words(texts, names, min_count)
    vocab, merges = _punctuation_bpe(_punctuation_pieces(texts, words), min_count)
    if any(_has_letter(a + b) for a, b in merges):
        raise AssertionError("a BPE merge joins letters: names would no longer be spelt letter by letter")
    tokenizer = build_tokenizer(vocab, merges, words, CONDITIONS)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    write_tokenizer_config(out_dir, CHAT_TEMPLATE, max_length)
    return tokenizer
