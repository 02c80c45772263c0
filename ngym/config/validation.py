"""Pydantic validation errors as messages that name the key and suggest the nearest known one."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ValidationError

from ngym.config.secrets import REDACTED, is_secret_key


def describe_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str, title: str) -> str:
    lines = []
    known = list(model.model_fields)
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        key = f"{prefix}.{loc}" if prefix and loc else (loc or prefix)
        if error["type"] == "extra_forbidden":
            leaf = str(error["loc"][-1])
            close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(sorted(known))})"
            lines.append(f"{key}: unknown key{hint}")
        elif error["type"] == "missing":
            lines.append(f"{key}: required but not set")
        else:
            secret = any(is_secret_key(part) for part in error["loc"] if isinstance(part, str))  # `api_keys.0` too
            shown = REDACTED if secret else repr(error.get("input"))
            lines.append(f"{key}: {error['msg']} (got {shown})")
    return title + ":\n  " + "\n  ".join(lines)
