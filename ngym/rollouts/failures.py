"""Why a rollout failed, in classes a user can act on, and when to stop because nothing can succeed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ngym.http.app import error_object
from ngym.http.client import HttpResult, UpstreamError

INVALID_TASK = "invalid_task"  # the task row itself is wrong: fix the data; never retried
MODEL = "model"  # the model server or vLLM
TOOL = "tool"  # the resources server's tools or seed_session
VERIFY = "verify"  # the resources server's verifier
TIMEOUT = "timeout"  # no answer within the rollout's time
AGENT = "agent"  # the agent itself, or an answer nobody could read
CLASSES = (INVALID_TASK, MODEL, TOOL, VERIFY, TIMEOUT, AGENT)
# Statuses that are not the task's fault although they are 4xx.
NOT_THE_TASK = frozenset({408, 429})


# NeMo Gym's mark on a finished answer that is not a reward (its judge_failsafe sets it to "judge_failed").
NG_FAILURE_CLASS = "_ng_failure_class"
NG_TIMEOUT_CLASSES = frozenset({"timeout", "timeout_exceeded", "agent_timeout"})


class RolloutFailed(Exception):
    def __init__(
        self, failure_class: str, message: str, status: int | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.failure_class = failure_class
        self.message = message
        self.status = status
        self.details = details or {}  # kept in the failure record beside class, status and error

    def record(self) -> dict[str, Any]:
        return {**self.details, "class": self.failure_class, "status": self.status, "error": self.message}


def reported_failure(answer: dict[str, Any]) -> RolloutFailed | None:
    """A /run answer that says its reward is no measurement (NeMo Gym's `_ng_failure_class`, e.g. a judge that
    could not be reached): a `verify` failure (`timeout` for NeMo Gym's timeout classes), never a reward."""
    marked = answer.get(NG_FAILURE_CLASS)
    if marked is None or marked is False:
        return None
    name = str(marked)
    reason = answer.get("failure_reason") or answer.get("_ng_failure_judge_error") or answer.get("_ng_failure_message")
    message = f"{name}: {reason}" if reason else f"{name} (the environment reported no reason)"
    details = {key: answer[key] for key in (NG_FAILURE_CLASS, "failure_kind") if answer.get(key) is not None}
    return RolloutFailed(TIMEOUT if name in NG_TIMEOUT_CLASSES else VERIFY, message[:2000], None, details)


def from_upstream_error(exc: UpstreamError) -> RolloutFailed:
    failure_class = TIMEOUT if exc.kind == UpstreamError.TIMEOUT else AGENT
    return RolloutFailed(failure_class, f"agent {exc.url}: {exc.reason}")


def is_task_refusal(status: int) -> bool:
    """A 4xx that says the task (the caller's request) is wrong."""
    return 400 <= status < 500 and status not in NOT_THE_TASK


def from_agent_answer(result: HttpResult) -> RolloutFailed:
    """The class of a failed /run answer: a 4xx is the task's fault; a 5xx names its class in `error.code`."""
    error = error_object(result.body)
    message = str(error.get("message") or result.body[:1000].decode(errors="replace"))
    param = error.get("param")
    if isinstance(param, str) and param and not message.startswith(param):
        message = f"{param}: {message}"
    if is_task_refusal(result.status):
        return RolloutFailed(INVALID_TASK, message, result.status)
    code = error.get("code")
    failure_class = code if isinstance(code, str) and code in CLASSES and code != INVALID_TASK else AGENT
    if result.status == 504 and failure_class == AGENT:
        failure_class = TIMEOUT
    return RolloutFailed(failure_class, message, result.status)


@dataclass
class ConsecutiveFailures:
    """Infrastructure failures in a row (an invalid task or a finished rollout breaks the run): at `limit`, the
    collection stops instead of burning the rest of the dataset into failures."""

    limit: int
    count: int = 0
    last: RolloutFailed | None = None

    def finished(self) -> None:
        self.count = 0

    def failed(self, failure: RolloutFailed) -> bool:
        """True when this failure reaches the limit."""
        if failure.failure_class == INVALID_TASK:
            self.count = 0
            return False
        self.count += 1
        self.last = failure
        return self.count >= self.limit

    def message(self) -> str:
        last = self.last
        assert last is not None
        status = f" (HTTP {last.status})" if last.status is not None else ""
        return (
            f"ng_collect_rollouts: stopping: {self.count} rollouts in a row failed; the last one: "
            f"{last.failure_class}{status}: {last.message}. Finished rollouts are kept; fix the cause and run the "
            "same command again to do the rest."
        )
