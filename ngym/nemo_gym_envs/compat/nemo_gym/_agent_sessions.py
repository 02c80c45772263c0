"""NeMo Gym's agent sessions (`/v1/agent_sessions`, `/v1/agent_sessions/close`): state an agent keeps for an
episode under an id its caller chooses.

A seed is idempotent (the same id and request return the same session; another request under that id is a
409); a close returns the agent's answer and keeps it for `session_close_retry_window_seconds`, so a retried close
gets the same answer and a seed arriving late for a closed id is refused. A seed that fails leaves nothing behind
unless the agent raises AgentSessionSetupError, whose partial state is kept for a close (and never activated).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from starlette.exceptions import HTTPException


@dataclass
class AgentSessionState:
    """What the agent keeps for one session; `request` is the seed request it was made from."""

    request: Any


class AgentSessionSetupError(Exception):
    """A seed failed part way: `state` is kept for a close, `error` is what the caller gets."""

    def __init__(self, state: AgentSessionState, *, error: BaseException) -> None:
        super().__init__(str(error))
        self.state = state
        self.error = error


@dataclass
class SessionRecord:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state: AgentSessionState | None = None
    closing: bool = False
    episode_id: Any = None
    close_response: Any = None
    expires_at: float = float("inf")


class AgentSessions:
    """The sessions of one agent process, by id."""

    def __init__(self) -> None:
        self.records: dict[str, SessionRecord] = {}
        self.closed: dict[str, SessionRecord] = {}  # in closing order, each kept until it expires

    def _expire(self) -> None:
        now = monotonic()
        for key in [key for key, record in self.closed.items() if record.expires_at <= now]:
            del self.closed[key]
            self.records.pop(key, None)

    @asynccontextmanager
    async def locked(self, session_id: str) -> AsyncIterator[SessionRecord]:
        """The record of `session_id`, held; a record that ends up empty is dropped on leaving."""
        self._expire()
        while True:
            record = self.records.setdefault(session_id, SessionRecord())
            async with record.lock:
                if self.records.get(session_id) is not record:
                    continue  # replaced while this caller waited for its lock: take the new one
                try:
                    yield record
                finally:
                    if record.state is None and record.close_response is None:
                        self.records.pop(session_id, None)
                return

    def active(self, session_id: str) -> AgentSessionState:
        record = self.records.get(session_id)
        if record is None or record.state is None or record.closing:
            raise HTTPException(409, "Unknown or closing agent_session_id")
        return record.state

    async def seed(self, body: Any, marker: str | None, make: Callable[[Any], Awaitable[AgentSessionState]]) -> None:
        """Seed `body.agent_session_id` (`marker`: the id the caller's session cookie already names)."""
        if marker is not None and marker != body.agent_session_id:
            raise HTTPException(409, "agent_session_id does not match the session cookie")
        async with self.locked(body.agent_session_id) as record:
            if record.close_response is not None:
                raise HTTPException(409, "Agent session is already closed")
            if record.closing:
                raise HTTPException(409, "Agent session is closing")
            if record.state is not None:
                if record.state.request != body:
                    raise HTTPException(409, "agent_session_id is already bound to another seed request")
                return
            if marker is not None:
                raise HTTPException(409, "Agent session cookie has expired")
            record.episode_id = body.episode_id
            try:
                record.state = await make(body.model_copy(deep=True))
            except AgentSessionSetupError as error:
                record.state, record.closing = error.state, True
                raise error.error from None

    async def close(
        self,
        body: Any,
        marker: str | None,
        retention_s: float,
        release: Callable[[AgentSessionState], Awaitable[Any]],
        unknown: Any,
    ) -> Any:
        """Close `body.agent_session_id`: the agent's answer (`release`), the kept one for a retried close, or
        `unknown` for an id never seeded."""
        if marker is not None and marker != body.agent_session_id:
            raise HTTPException(409, "agent_session_id does not match the session cookie")
        async with self.locked(body.agent_session_id) as record:
            if record.episode_id is not None and record.episode_id != body.episode_id:
                raise HTTPException(409, "episode_id does not match the seeded agent session")
            if record.close_response is not None:
                return record.close_response.model_copy(deep=True)
            if record.state is None:
                if marker is not None:
                    raise HTTPException(409, "Agent close receipt has expired")
                result = unknown  # closed all the same, so that a late seed for it is refused
            else:
                record.closing = True
                result = await release(record.state)  # raises: the state stays for another close
            record.state, record.episode_id = None, body.episode_id
            record.close_response = result
            record.expires_at = monotonic() + retention_s
            self.closed[body.agent_session_id] = record
            return result
