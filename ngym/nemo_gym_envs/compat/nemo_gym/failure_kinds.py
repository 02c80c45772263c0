"""Names of the kinds of failure a verify response may report (`failure_kind`)."""

from __future__ import annotations

JUDGE_FAILED = "judge_failed"
VERIFIER_ERROR = "verifier_error"
ENVIRONMENT_ERROR = "environment_error"
TIMEOUT = "timeout"
REGISTERED = frozenset({JUDGE_FAILED, VERIFIER_ERROR, ENVIRONMENT_ERROR, TIMEOUT})


def is_namespaced(kind: str) -> bool:
    return ":" in kind


def is_registered(kind: str) -> bool:
    return kind in REGISTERED


def validate_failure_kind(kind: str | None) -> str | None:
    """Any kind is kept: an unknown name is a label to fix, never a reason to lose the failure."""
    return kind
