"""Session identity: a random id in a plain cookie (signing it would cost more than it gives here).

Each id starts with a mark of the process that opened it, so a replica that ng_run restarted (same URL, state
gone) tells a session of its earlier process from its own: it refuses it rather than serve it without its
state (ngym.servers.resources). Forked workers share their launcher's mark.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "ngym_session"
PROCESS_MARK = secrets.token_hex(4) + "-"  # this process's, drawn when it starts


def new_session_id() -> str:
    return PROCESS_MARK + secrets.token_hex(12)


def opened_here(session_id: str) -> bool:
    """Whether this process opened the session (an id from before a restart was opened by another)."""
    return session_id.startswith(PROCESS_MARK)


def session_id_from(request: Request, cookie: str = SESSION_COOKIE) -> str | None:
    return request.cookies.get(cookie)


def set_session_cookie(response: Response, value: str, cookie: str = SESSION_COOKIE) -> None:
    response.set_cookie(cookie, value, httponly=True, samesite="lax")
