"""Hypothesis strategies for the secret tests: names that hold a secret by their meaning, in the forms configs
use (plurals, `_value`/`_pem` forms, camelCase, UPPER_CASE, header-style), and values that would break a naive
override (`=`, braces, commas, quotes, backslashes, `${`, newlines)."""

from __future__ import annotations

import orjson
from hypothesis import strategies as st

# Each of these holds a secret whatever is put before it.
SECRET_CORES = (
    "api_key", "api_keys", "access_token", "access_tokens", "refresh_tokens", "auth_header", "auth_token",
    "auth", "client_secret", "secret", "secrets", "password", "passwords", "passwd", "passphrase", "private_key",
    "private_key_pem", "private_keys", "token_value", "hf_token", "token", "bearer_token", "credentials",
    "session_cookie", "authorization", "secret_access_key", "jwt",
)  # fmt: skip
# Settings whose names look like secrets but are not: their values are shown.
NOT_SECRET_NAMES = (
    "max_tokens", "max_output_tokens", "max_context_tokens", "return_token_id_information", "token_exact",
    "tokenizer", "prompt_token_ids", "generation_token_ids", "top_logprobs", "num_tokens", "input_tokens",
    "output_tokens", "total_tokens", "tokens_per_second", "eos_token", "pad_token", "keyword", "monkey", "author",
    "sort_key", "keys", "default_headers", "session_id", "token_ids",
)  # fmt: skip
_PREFIXES = ("", "judge_", "policy_", "openai_", "db_", "proxy_", "upstream_", "my_", "service_", "x_", "ssh_")
_SUFFIXES = ("", "_value", "_b64", "_2", "_pem", "_list")
_VALUE_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("=,{}[]'\"\\$ \n:")


def _styled(words: str, style: str) -> str:
    parts = [part for part in words.split("_") if part]
    if style == "upper":
        return "_".join(parts).upper()
    if style == "camel":
        return parts[0] + "".join(part.capitalize() for part in parts[1:])
    if style == "header":
        return "-".join(part.capitalize() for part in parts)
    return "_".join(parts)


@st.composite
def secret_names(draw: st.DrawFn) -> str:
    """`judge_api_keys`, `DB_PASSWORD`, `authHeader`, `X-Private-Key-Pem`, `hf_token_value`, ..."""
    core = draw(st.sampled_from(SECRET_CORES))
    prefix = draw(st.sampled_from(_PREFIXES) | st.from_regex(r"x[a-z]{1,6}_", fullmatch=True))
    suffix = draw(st.sampled_from(_SUFFIXES))
    return _styled(prefix + core + suffix, draw(st.sampled_from(("snake", "upper", "camel", "header"))))


def secret_values(*, header_safe: bool = False) -> st.SearchStrategy[str]:
    """A distinctive value (so that finding it anywhere means it leaked) with awkward characters in it; with
    `header_safe`, only what an HTTP header may carry."""
    chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E) if header_safe else _VALUE_CHARS
    tails = st.text(chars, min_size=6, max_size=24)
    heads = st.sampled_from(("sk-proj-", "hf_", "ghp_", "Zq9", "pw!"))
    return st.builds(lambda head, tail: f"{head}{tail}", heads, tails)


def appearances(value: str) -> tuple[str, ...]:
    """How a value would look if it leaked: as it is, and inside a JSON string."""
    return (value, orjson.dumps(value).decode()[1:-1])
