"""Session identity: a random id in a plain cookie (signing it would cost more than it gives here)."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "ngym_session"


def new_session_id() -> str:
    return secrets.token_hex(12)


def session_id_from(request: Request, cookie: str = SESSION_COOKIE) -> str | None:
    return request.cookies.get(cookie)


def set_session_cookie(response: Response, value: str, cookie: str = SESSION_COOKIE) -> None:
    response.set_cookie(cookie, value, httponly=True, samesite="lax")
