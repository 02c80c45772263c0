"""ng_viewer's server: the app that serves the page (static/) and the JSON API (api.py) over what the viewer holds
(state.py), behind the host check and, off loopback, a token."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import inspect
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ngym.http.app import HttpError, error_response, json_response
from ngym.http.guard import ErrorGuard, exception_handlers
from ngym.viewer.api import Api
from ngym.viewer.index import RowGone
from ngym.viewer.state import Viewer

STATIC = Path(__file__).resolve().parent / "static"
# The page draws rollout text with textContent only; this is the second lock on the door.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "Cache-Control": "no-cache",
}
API_HEADERS = {"Cache-Control": "no-store"}


TOKEN_PARAM = "token"


class TokenGate:
    """A viewer reachable from other machines answers only who has the token ng_viewer printed at start (as
    notebook servers do): `?token=...` (the printed URL; on the page it sets a cookie and leaves the address, so a
    shared view never carries it), that cookie, or `Authorization: token <token>` (or `Bearer`) for scripts."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()
        self.cookie = "ngym_viewer_" + hashlib.sha256(self.token).hexdigest()[:12]

    def _valid(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        from_query = request.query_params.get(TOKEN_PARAM)
        if from_query is not None:
            if not self._valid(from_query):
                await self._refuse(scope, receive, send, "the token in the address is not this viewer's")
                return
            rest = [(key, value) for key, value in request.query_params.multi_items() if key != TOKEN_PARAM]
            if request.method == "GET" and request.url.path == "/":
                address = "/" + (f"?{urlencode(rest)}" if rest else "")
                answer = RedirectResponse(address, status_code=303, headers={"Cache-Control": "no-store"})
                answer.set_cookie(self.cookie, self.token.decode(), httponly=True, samesite="strict", path="/")
                await answer(scope, receive, send)
                return
            scope = {**scope, "query_string": urlencode(rest).encode()}
        elif not (self._valid(request.cookies.get(self.cookie)) or self._valid(_authorization_token(request))):
            await self._refuse(scope, receive, send, "this viewer needs the token ng_viewer printed at start")
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, why: str) -> None:
        message = f"ng_viewer: {why}: open the address it printed (http://<host>:<port>/?token=...)"
        await error_response(401, message, code="token_required")(scope, receive, send)


def _authorization_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("token", "bearer") else None


def viewer_app(viewer: Viewer, *, hosts: frozenset[str] | None = None, token: str | None = None) -> Starlette:
    """The viewer's app. `hosts`: the names it answers to (loopback names when not given); `token`: required of
    every request when given (a viewer reachable off this machine)."""
    api = Api(viewer)

    def json_route(path: str, handler: Callable[[Request], Any]) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                answer = handler(request)
                if inspect.isawaitable(answer):  # a handler that waits on the network (the Gym view)
                    answer = await answer
                return json_response(answer, headers=API_HEADERS)
            except RowGone as exc:
                raise HttpError(409, f"{exc}; reload the page") from None

        return Route(path, endpoint, methods=["GET"])

    async def page(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        follower = asyncio.create_task(viewer.follow())
        try:
            yield
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    routes: list[Route | Mount] = [Route("/", page, methods=["GET"])]
    routes.extend(json_route(path, handler) for path, handler in api.routes())
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC), name="static"))
    middleware = [Middleware(ErrorGuard, name="ng_viewer", redact=_as_is, log=sys.stderr, hosts=hosts)]
    if token is not None:
        middleware.append(Middleware(TokenGate, token=token))
    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers=exception_handlers(_as_is), middleware=middleware
    )


def _as_is(text: str) -> str:
    return text
