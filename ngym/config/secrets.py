"""Keep secrets (API keys, tokens, passwords) out of logs, errors and HTTP answers.

What is secret is decided by meaning, not by substrings of key names: `api_key`, `judge_api_keys`, `hf_token`,
`access_tokens`, `X-Api-Key`, `Authorization`, `auth_header`, `client_secret`, `db_password`, `private_key_pem` and
`hf_token_value` are secret; `max_tokens`, `return_token_id_information`, `tokenizer` and `eos_token` are not.
A password inside a URL (`http://user:key@host/v1`) is cut out wherever the URL appears, and once a value is
known to be secret, it is cut out of every other string of the same configuration too.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
# Names that say "a secret" wherever they stand in a key, even run together (`apikey`, `X-Api-Key`, `PRIVATEKEY`).
_SECRET_STEMS = (
    "apikey", "password", "passwd", "passphrase", "passkey", "secret", "authorization", "credential", "cookie",
    "privatekey",
)  # fmt: skip
# A key is a secret when its last noun is one of these, followed by nothing or by words that only say what form the
# secret takes: `hf_token`, `auth_header`, `token_value`, `private_key_pem`, `jwt_b64`.
_SECRET_NOUNS = frozenset({"key", "token", "auth", "bearer", "jwt", "pat"})
_FORM_WORDS = frozenset(
    {"value", "pem", "der", "b64", "base64", "hex", "byte", "raw", "encoded", "plain", "plaintext", "material",
     "header", "string", "secret", "json", "list"}
)  # fmt: skip
# `<word>_token`: a tokenizer's token (`eos_token`, `pad_token`), not a credential.
_TOKENIZER_WORDS = frozenset(
    {"eos", "bos", "pad", "unk", "sep", "mask", "cls", "stop", "special", "start", "end", "begin", "think", "thinking",
     "image", "audio", "video", "vision", "placeholder", "eot", "eom", "boi", "eoi"}
)  # fmt: skip
# `<word>_key`: a field of the data (`sort_key`, `answer_key`, `cache_key`), not a credential.
_DATA_WORDS = frozenset(
    {"sort", "cache", "primary", "foreign", "partition", "group", "grouping", "dict", "map", "lookup", "join", "index",
     "label", "answer", "input", "output", "prompt", "reward", "text", "id", "field", "column", "metric", "result",
     "response", "target", "message", "sample", "task", "row", "data", "dataset", "score", "solution", "question",
     "context", "image", "audio", "video", "reference", "expected", "truth", "dedup", "routing", "hash", "rng", "prng",
     "random", "seed", "shard", "bucket", "object", "metadata", "dataframe", "record", "entry", "item", "name",
     "composite", "unique", "match", "conversation", "turn", "tool", "document", "doc", "query", "chosen", "rejected"}
)  # fmt: skip
# Plural nouns name many secrets only with a credential's qualifier: `access_tokens`, `judge_api_keys`, but not
# `max_tokens`, `input_tokens` or `sort_keys`.
_CREDENTIAL_WORDS = frozenset(
    {"api", "access", "refresh", "id", "auth", "bearer", "session", "oauth", "csrf", "xsrf", "jwt", "personal",
     "service", "client", "secret", "private", "signing", "encryption", "ssh", "hmac", "license", "master", "account",
     "deploy", "gpg", "pgp", "rsa", "hf", "github", "gh", "gitlab", "wandb", "openai", "anthropic", "sas", "security",
     "login", "bot", "app", "user", "cloud", "aws", "gcp", "azure", "nvidia", "ngc", "huggingface", "slack", "discord"}
)  # fmt: skip
_PLURALS = {
    singular + "s": singular
    for singular in ("key", "token", "auth", "pat", "jwt", "value", "header", "string", "secret", "byte", "list")
}
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_URL_WITH_USER = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@]+@[^\s]*")
# Shorter strings are too likely to occur by chance to be scrubbed from other values.
_MIN_SCRUBBED_LENGTH = 6


def _words(name: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(name)]


@functools.lru_cache(maxsize=8192)  # names repeat: every row of a file, every request's headers
def is_secret_key(name: str) -> bool:
    """Whether a key holds a secret, by what its name means: `api_key`, `judge_api_keys`, `access_tokens`,
    `auth_header`, `client_secret`, `db_password`, `private_key_pem`, `hf_token_value`, `Authorization` are;
    `max_tokens`, `return_token_id_information`, `tokenizer`, `eos_token`, `sort_key` are not."""
    last = name.rsplit(".", 1)[-1]
    flat = "".join(ch for ch in last.lower() if ch.isalnum())
    if any(stem in flat for stem in _SECRET_STEMS):
        return True
    words = _words(last)
    for position in range(len(words) - 1, -1, -1):
        word = words[position]
        stem = word.rstrip("0123456789") or word  # `key2`, `Header2`
        if word.isdigit() or _PLURALS.get(word, word) in _FORM_WORDS or _PLURALS.get(stem, stem) in _FORM_WORDS:
            continue  # `..._value`, `..._pem`, `..._b64`, `..._2`: the form of the secret; the noun comes before
        word = stem
        noun = _PLURALS.get(word, word)
        if noun not in _SECRET_NOUNS:
            return False
        before = words[position - 1] if position else None
        if noun != word:  # plural: many secrets only with a credential's qualifier
            return before in _CREDENTIAL_WORDS
        if noun == "token":
            return before not in _TOKENIZER_WORDS
        if noun == "key":
            return before not in _DATA_WORDS
        return True
    return False


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


# `key=value` or `key: value` inside an override's value (`{X-Api-Key: k1, Authorization: 'Bearer k2'}`).
_INLINE_NAME = re.compile(r"""(?P<name>[A-Za-z_][\w.-]*)['"]?\s*[:=]\s*""")
_QUOTED = re.compile(r"""'(?:\\.|[^'\\])*'?|"(?:\\.|[^"\\])*"?""")
_OVERRIDE = re.compile(r"(?P<lhs>[+~]*(?P<key>[^=\s'\"]*))=(?P<value>.*)\Z", re.DOTALL)


def redact_override(arg: str, secrets: frozenset[str] = frozenset()) -> str:
    """A command-line override as it may be shown: the value of a secret key is `***` (`++policy_api_key=***`),
    and so is a secret set inside its value, whatever the override's syntax (it may be one that did not parse)."""
    match = _OVERRIDE.match(arg)
    if match is None:
        return redact_text(arg, secrets)
    if is_secret_key(match["key"].split("@", 1)[0]):
        return f"{match['lhs']}={REDACTED}"
    return redact_text(f"{match['lhs']}={_redact_inline(match['value'])}", secrets)


def _redact_inline(text: str) -> str:
    """`text` with the value of every secret-named setting in it replaced: a quoted value to its closing quote,
    an unquoted one to the end (a comma or a bracket may be part of it)."""
    shown: list[str] = []
    position = 0
    while (setting := _INLINE_NAME.search(text, position)) is not None:
        shown.append(text[position : setting.end()])
        position = setting.end()
        if not is_secret_key(setting["name"]):
            continue
        quoted = _QUOTED.match(text, position)
        position = quoted.end() if quoted is not None else len(text)
        shown.append(REDACTED)
    shown.append(text[position:])
    return "".join(shown)


# A mapping with one of these keys is a log-probability entry (`{"token": "Hello", "logprob": -0.1}`): its `token`
# is a piece of text, not a credential.
_LOGPROB_KEYS = ("logprob", "top_logprobs")


def _holds_secret(mapping: dict[Any, Any], key: Any) -> bool:
    if not is_secret_key(str(key)):
        return False
    return key != "token" or not any(name in mapping for name in _LOGPROB_KEYS)


def secret_values(value: Any) -> frozenset[str]:
    """The string values of secret keys, and the passwords of URLs, anywhere in `value`."""
    found: set[str] = set()

    def visit(item: Any, secret: bool) -> None:
        if isinstance(item, dict):
            for key, child in item.items():
                visit(child, secret or _holds_secret(item, key))
        elif isinstance(item, list):
            for child in item:
                if isinstance(child, (dict, list, str)):  # a row's long lists of token IDs are numbers
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
            key: (REDACTED if _holds_secret(value, key) and child else redact(child, known))
            for key, child in value.items()
        }
    if isinstance(value, list):
        return [redact(item, known) if isinstance(item, (dict, list, str)) else item for item in value]
    if isinstance(value, str):
        return redact_text(value, known)
    return value
