"""ng_viewer's server: the indexes of the files it shows, kept up with the files as they grow, and the app that
serves the page (static/) and the JSON API (api.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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

from ngym.config.secrets import redact
from ngym.http.app import HttpError, error_response, json_response
from ngym.http.guard import ErrorGuard, exception_handlers
from ngym.rollouts.output import failures_path, summary_path
from ngym.viewer import stats
from ngym.viewer.build import build, new_index
from ngym.viewer.index import RowGone, RowIndex
from ngym.viewer.queries import Cache, Sources
from ngym.viewer.rows import STATUS_NAMES
from ngym.viewer.tokens import Vocab

STATIC = Path(__file__).resolve().parent / "static"
POLL_S = 0.5
# The page draws rollout text with textContent only; this is the second lock on the door.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "Cache-Control": "no-cache",
}
API_HEADERS = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class ViewerConfig:
    rollouts: Path
    compare: Path | None = None
    tokenizer: Vocab | None = None
    pass_threshold: float = 1.0
    parallel: bool = True
    label: str | None = None  # the file as the user named it (the page's title)


class Viewer:
    def __init__(self, config: ViewerConfig) -> None:
        self.config = config
        failures = failures_path(config.rollouts)
        self.sources = Sources(new_index(config.rollouts, "rollouts"), new_index(failures, "failures"))
        self.other = new_index(config.compare, "rollouts") if config.compare else None
        self.cache = Cache()
        self.problem: str | None = None

    @property
    def indexes(self) -> list[RowIndex]:
        return [self.sources.rollouts, self.sources.failures, *([self.other] if self.other else [])]

    async def follow(self) -> None:
        """Index the files, then keep up with what is appended to them. A file that cannot be read (or a bug)
        is shown on the page and retried; the server keeps serving what it has."""
        for index in (self.sources.rollouts, self.other):
            if index is not None:
                try:
                    await build(index, "rollouts", parallel=self.config.parallel)
                except Exception as exc:  # step() below indexes the rest in this process
                    self._report(f"indexing {index.path} in parallel failed: {type(exc).__name__}: {exc}")
        while True:
            progressed, problems = False, []
            for index in self.indexes:
                try:
                    progressed |= index.step()
                except Exception as exc:
                    problems.append(f"cannot index {index.path}: {type(exc).__name__}: {exc}")
            self._report("; ".join(problems) or None)
            await asyncio.sleep(0 if progressed else POLL_S)

    def _report(self, problem: str | None) -> None:
        if problem is not None and problem != self.problem:
            print(f"ng_viewer: warning: {problem}", file=sys.stderr, flush=True)
        self.problem = problem

    def status(self) -> dict[str, Any]:
        rollouts, failures, other = self.sources.rollouts, self.sources.failures, self.other
        versions = [*rollouts.version, *failures.version, *(other.version if other else ())]
        return {
            "file": self.config.label or str(self.config.rollouts),
            "exists": rollouts.exists,
            "rows": rollouts.rows,
            "failures": failures.rows,
            "bytes": rollouts.size,
            "indexed_bytes": rollouts.position,
            "indexing": rollouts.indexing or bool(other and other.indexing),
            "version": "-".join(map(str, versions)),
            "problem": self.problem,
            "compare": None if other is None else {"file": str(other.path), "rows": other.rows},
            "tokenizer": self.config.tokenizer.name if self.config.tokenizer else None,
            "pass_threshold": self.config.pass_threshold,
        }

    def fields(self) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            labels: dict[str, dict[str, int]] = {}
            for index in (self.sources.rollouts, self.sources.failures):
                for name, column in index.labels.items():
                    counts = labels.setdefault(name, {})
                    for value, count in column.counts().items():
                        counts[value] = counts.get(value, 0) + count
            rollouts, failures = self.sources.rollouts, self.sources.failures
            return {
                "numbers": self.sources.numeric_fields(),
                "labels": labels,
                "text_fields": sorted(rollouts.text_fields | failures.text_fields),
                "agents": sorted({name for index in (rollouts, failures) for name in index.agents if name}),
                "statuses": list(STATUS_NAMES),
            }

        return self.cache.get(("fields", self.sources.version), compute)

    def summary(self) -> dict[str, Any]:
        rollouts, failures = self.sources.rollouts, self.sources.failures
        file = summary_path(self.config.rollouts)
        return self.cache.get(
            ("summary", self.sources.version),
            lambda: stats.summary(rollouts, failures, file, self.config.pass_threshold, self.groups()),
        )

    def groups(self) -> dict[int, stats.Group]:
        rollouts = self.sources.rollouts
        return self.cache.get(("groups", rollouts.version), lambda: stats.groups(rollouts, self.config.pass_threshold))

    def locate(self, rid: str) -> tuple[RowIndex, int]:
        """The index and row number of `r<i>` (rollouts) or `f<j>` (failures)."""
        index = {"r": self.sources.rollouts, "f": self.sources.failures}.get(rid[:1])
        if index is None or not rid[1:].isdigit():
            raise HttpError(404, f"no row {rid!r}: rows are r<number> (rollouts) or f<number> (failures)", param="id")
        number = int(rid[1:])
        if number >= index.rows:
            raise HttpError(404, f"no row {rid}: {index.path} has {index.rows} rows indexed", param="id")
        return index, number

    def read(self, index: RowIndex, number: int) -> dict[str, Any]:
        """A row as the page may show it: a secret a row holds (`api_key`, `auth_header`, ...) is `***`."""
        try:
            row = index.read(number)
        except RowGone as exc:
            raise HttpError(409, f"{exc}; reload the page") from None
        shown = redact(row)
        assert isinstance(shown, dict)
        return shown


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
    from ngym.viewer.api import Api  # the API's handlers use Viewer; imported here to keep the cycle one-way

    api = Api(viewer)

    def json_route(path: str, handler: Callable[[Request], Any]) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return json_response(handler(request), headers=API_HEADERS)
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
