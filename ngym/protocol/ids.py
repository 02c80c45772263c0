"""Identifiers for Responses objects and items."""

import os


def new_id(prefix: str) -> str:
    """`prefix` + 24 random hex digits: unique across processes and forks, and cheaper than uuid4()."""
    return prefix + os.urandom(12).hex()
