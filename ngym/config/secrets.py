"""Keep secrets (API keys, tokens, passwords) out of logs, errors and HTTP answers.

What is secret is decided by meaning, not by substrings of key names: `api_key`, `hf_token`, `X-Api-Key`,
`Authorization` and `password` are secret; `max_tokens`, `return_token_id_information` and `tokenizer` are not.
A password inside a URL (`http://user:key@host/v1`) is cut out wherever the URL appears, and once a value is
known to be secret, it is cut out of every other string of the same configuration too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
# Words that make a key secret wherever they stand in its name.
_SECRET_WORDS = frozenset(
    {"apikey", "password", "passwd", "passphrase", "secret", "authorization", "credential", "credentials", "cookie"}
)
# Words that make a key secret as its last word: `hf_token`, `access_key`, but not `max_tokens` or `token_ids`.
_SECRET_LAST_WORDS = frozenset({"token", "key", "auth", "bearer"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URL_WITH_USER = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@]+@[^\s]*")
# Shorter strings are too likely to occur by chance to be scrubbed from other values.
_MIN_SCRUBBED_LENGTH = 6


def _words(name: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(name)]


def is_secret_key(name: str) -> bool:
    words = _words(name.rsplit(".", 1)[-1])
    if not words:
        return False
    return any(word in _SECRET_WORDS for word in words) or words[-1] in _SECRET_LAST_WORDS


def redact_url(url: str) -> str:
    """Drop user:password from a URL so it can be shown."""
    try:
        parts = urlsplit(url)
        if parts.password is None and parts.username is None:
            return url
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED  # not a URL urllib can read: show nothing of it
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str, secrets: frozenset[str] = frozenset()) -> str:
    """`text` without URL passwords and without any of `secrets`."""
    if "@" in text:
        text = _URL_WITH_USER.sub(lambda match: redact_url(match.group(0)), text)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def secret_values(value: Any) -> frozenset[str]:
    """The string values of secret keys, and the passwords of URLs, anywhere in `value`."""
    found: set[str] = set()

    def visit(item: Any, secret: bool) -> None:
        if isinstance(item, dict):
            for key, child in item.items():
                visit(child, secret or is_secret_key(str(key)))
        elif isinstance(item, list):
            for child in item:
                visit(child, secret)
        elif isinstance(item, str):
            if secret and len(item) >= _MIN_SCRUBBED_LENGTH:
                found.add(item)
                # "Bearer sk-..." also hides "sk-..." on its own.
                found.update(part for part in item.split() if len(part) >= _MIN_SCRUBBED_LENGTH)
            if "@" in item:
                for match in _URL_WITH_USER.finditer(item):
                    try:
                        password = urlsplit(match.group(0)).password
                    except ValueError:
                        continue
                    if password and len(password) >= _MIN_SCRUBBED_LENGTH:
                        found.add(password)

    visit(value, False)
    return frozenset(found)


def redact(value: Any, secrets: frozenset[str] | None = None) -> Any:
    """A copy of value with every secret key's value replaced, URL passwords dropped, and every known secret
    value cut out of the other strings."""
    known = secret_values(value) if secrets is None else secrets
    if isinstance(value, dict):
        return {
            key: (REDACTED if is_secret_key(str(key)) and child else redact(child, known))
            for key, child in value.items()
        }
    if isinstance(value, list):
        return [redact(item, known) for item in value]
    if isinstance(value, str):
        return redact_text(value, known)
    return value
