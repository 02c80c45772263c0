"""A blocking health probe for command-line tools and tests."""

from __future__ import annotations

import urllib.error
import urllib.request


def answers(base_url: str, timeout: float = 3.0) -> bool:
    """Whether the server at base_url answers GET /health with 200."""
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
