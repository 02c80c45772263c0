"""Structured outputs that make a real vLLM on a random tiny model say exactly what a test needs."""

from __future__ import annotations

import re

# Lets structured outputs constrain the <think> part too, so tests can force a reasoning reply.
STRUCTURED_OUTPUTS_IN_REASONING: tuple[str, ...] = ("--structured-outputs-config", '{"enable_in_reasoning": true}')
_REGEX_SPECIAL = re.compile(r"([.^$*+?{}\[\]\\|()])")


def literal_regex(text: str) -> str:
    """A regex matching exactly ``text``, for vLLM's ``structured_outputs: {"regex": ...}``.

    Unlike ``re.escape`` it leaves spaces and newlines bare: xgrammar warns about ``\\ `` and ``\\<newline>``.
    """
    return _REGEX_SPECIAL.sub(r"\\\1", text)
