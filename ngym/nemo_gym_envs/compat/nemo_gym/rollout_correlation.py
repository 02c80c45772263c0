"""Which rollout a request belongs to, as NeMo Gym carries it: a `/ng-rollout/<id>/...` path prefix that
`RolloutContextMiddleware` strips (the rest of the path is routed as usual) and exposes to the request's code
through `current_rollout_id()`, or `_ng_rollout_id` / the task and rollout indices of a run request's body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel

from .config_types import ROLLOUT_PATH_PREFIX
from .global_config import ATTEMPT_INDEX_KEY_NAME, ROLLOUT_ID_KEY_NAME, ROLLOUT_INDEX_KEY_NAME, TASK_INDEX_KEY_NAME

ROLLOUT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ROLLOUT_ID: ContextVar[str | None] = ContextVar("nemo_gym_rollout_id", default=None)


def maybe_rollout_id_from_run_body(body: BaseModel | Mapping[str, Any] | None) -> str | None:
    """`_ng_rollout_id` when given (it must match ROLLOUT_ID_PATTERN), else `<task>-<rollout>`; `-a<n>` added for
    a re-dispatch attempt n > 0; None when the body carries neither."""
    if not isinstance(body, BaseModel | Mapping):
        return None

    def field(key: str) -> Any:
        if isinstance(body, Mapping):
            return body.get(key)
        if key == ROLLOUT_ID_KEY_NAME and hasattr(body, "capture_rollout_id"):
            return body.capture_rollout_id
        return getattr(body, key, None)

    explicit = field(ROLLOUT_ID_KEY_NAME)
    if explicit is not None:
        if not (isinstance(explicit, str) and ROLLOUT_ID_PATTERN.match(explicit)):
            raise ValueError(
                f"{ROLLOUT_ID_KEY_NAME} must be letters, digits, dots, dashes or underscores starting with a letter "
                f"or digit; got {explicit!r}"
            )
        rollout_id = explicit
    else:
        task, rollout = field(TASK_INDEX_KEY_NAME), field(ROLLOUT_INDEX_KEY_NAME)
        if task is None or rollout is None:
            return None
        rollout_id = f"{task}-{rollout}"
    attempt = field(ATTEMPT_INDEX_KEY_NAME)
    if attempt is not None and int(attempt) > 0:
        rollout_id = f"{rollout_id}-a{int(attempt)}"
    return rollout_id


def current_rollout_id() -> str | None:
    """The rollout of the request being handled (from its path prefix), if any."""
    return _ROLLOUT_ID.get()


@contextmanager
def rollout_context(rollout_id: str | None) -> Iterator[None]:
    token = _ROLLOUT_ID.set(rollout_id)
    try:
        yield
    finally:
        _ROLLOUT_ID.reset(token)


class RolloutContextMiddleware:
    """ASGI middleware: strip a `/ng-rollout/<id>` prefix and run the request inside its rollout's context."""

    _PREFIX = re.compile(
        rf"^/{re.escape(ROLLOUT_PATH_PREFIX)}/(?P<rollout_id>{ROLLOUT_ID_PATTERN.pattern.strip('^$')})(?P<rest>/.*)$"
    )

    def __init__(self, app: Any) -> None:
        self._app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        match = self._PREFIX.match(scope.get("path", "")) if scope.get("type") == "http" else None
        if match is None:
            await self._app(scope, receive, send)
            return
        path = match.group("rest")
        with rollout_context(match.group("rollout_id")):
            await self._app({**scope, "path": path, "raw_path": path.encode()}, receive, send)
