"""Keep secrets (API keys, tokens) out of logs, errors and HTTP answers."""

from __future__ import annotations

from typing import Any

REDACTED = "***"
_SECRET_WORDS = ("api_key", "apikey", "token", "secret", "password", "authorization")


def is_secret_key(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact(value: Any) -> Any:
    """A copy of value with every secret-looking key's value replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(str(k)) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value
