"""Real vLLM for tests: the product's launcher (ngym.vllm.process) plus what only tests need."""

from __future__ import annotations

import re

from ngym.vllm.process import (
    DEFAULT_ARGS,
    DEFAULT_ENV,
    VLLM_PYTHON_ENV,
    HttpResult,
    VllmServer,
    VllmStartError,
    find_vllm_python,
    free_port,
    http_request,
)

__all__ = [
    "DEFAULT_ARGS",
    "DEFAULT_ENV",
    "STRUCTURED_OUTPUTS_IN_REASONING",
    "VLLM_PYTHON_ENV",
    "HttpResult",
    "VllmServer",
    "VllmStartError",
    "find_vllm_python",
    "free_port",
    "http_request",
    "literal_regex",
]

# Lets structured outputs constrain the <think> part too, so tests can force a reasoning reply.
STRUCTURED_OUTPUTS_IN_REASONING: tuple[str, ...] = ("--structured-outputs-config", '{"enable_in_reasoning": true}')
_REGEX_SPECIAL = re.compile(r"([.^$*+?{}\[\]\\|()])")


def literal_regex(text: str) -> str:
    """A regex matching exactly ``text``, for vLLM's ``structured_outputs: {"regex": ...}``.

    Unlike ``re.escape`` it leaves spaces and newlines bare: xgrammar warns about ``\\ `` and ``\\<newline>``.
    """
    return _REGEX_SPECIAL.sub(r"\\\1", text)
