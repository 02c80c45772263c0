"""A resources server's verifier cases (`tests/verifier_cases.jsonl`), declared at import time by its app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class VerifierFixtureError(ValueError):
    """A fixture is invalid or does not match the verifier."""


@dataclass(frozen=True)
class VerifierFixture:
    server_factory: Callable[[], object]
    request_model: type[BaseModel]
    cases_path: str | Path
    invoke: Any = None
    reseed: Any = None
