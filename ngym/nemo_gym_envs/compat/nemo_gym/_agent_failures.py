"""What a NeMo Gym agent's route answers when it raises, in the shape ngym's collector reads (as ngym's own
simple_agent answers): a call to another server that the server refused as a bad request passes its 4xx on (the
task is wrong: `invalid_task`); any other failed call is a 502 whose `error.code` names the part that failed
(`model` for a model server, `verify` for a resources server's /verify, `tool` for its other routes, or the class
an inner agent named); anything else the agent raised is a 500 of class `agent`. NeMo Gym answers all of these
500 with the exception's repr, which ngym's collector could only count as the agent's failure.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from starlette.responses import JSONResponse

from ngym.http.app import error_object
from ngym.rollouts.failures import AGENT, CLASSES, INVALID_TASK, MODEL, TOOL, VERIFY, is_task_refusal

from ._runtime import current, installed

MODELS, RESOURCES = "responses_api_models", "resources_servers"
MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class Target:
    """The instance of the run a URL belongs to."""

    name: str
    server_type: str


def target_of(url: str) -> Target | None:
    """Which of the run's instances listens where `url` points (None when none does, or outside a run)."""
    if not installed():
        return None
    runtime = current()
    wanted = _address(url)
    for name, base in runtime.urls.items():
        if _address(base) == wanted:
            kinds = runtime.global_config.get(name) or {}
            return Target(name, next(iter(kinds), ""))
    return None


def _address(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return ("127.0.0.1" if host == "localhost" else host), parts.port


def failure_class(target: Target | None, path: str, body: bytes) -> str:
    """The class of a failed call to `target`'s `path` whose answer was `body`."""
    if target is not None and target.server_type == MODELS:
        return MODEL
    if target is not None and target.server_type == RESOURCES:
        return VERIFY if path.rstrip("/").endswith("/verify") else TOOL
    named = error_object(body).get("code")  # an inner agent (or an ngym server) said which part failed
    return named if isinstance(named, str) and named in CLASSES and named != INVALID_TASK else AGENT


def error_answer(status: int, message: str, code: str) -> JSONResponse:
    error = {"message": message[:MAX_MESSAGE_CHARS], "type": "rollout_failed", "code": code}
    return JSONResponse({"error": error}, status_code=status)


def answer_for(agent: str, route: str, error: BaseException) -> JSONResponse:
    """The answer of agent `agent`'s `route` that raised `error` (printed with its traceback when it is not a
    failed call to another server)."""
    if isinstance(error, aiohttp.ClientResponseError):
        url = str(error.request_info.real_url)
        content = getattr(error, "response_content", b"")
        body = content if isinstance(content, bytes) else str(content).encode()
        target = target_of(url)
        who = f"{target.name} ({url})" if target else url
        said = body.decode(errors="replace")[:1000]
        if is_task_refusal(error.status):
            return error_answer(error.status, f"{who} rejected the task (HTTP {error.status}): {said}", INVALID_TASK)
        code = failure_class(target, urlsplit(url).path, body)
        print(f"{agent}: {route}: {who} answered HTTP {error.status}: {said}", flush=True)
        return error_answer(502, f"{agent}: {who} answered HTTP {error.status}: {said}", code)
    if isinstance(error, aiohttp.ClientConnectorError):
        target = target_of(f"http://{error.host}:{error.port}")
        code = failure_class(target, "", b"") if target is not None else AGENT
        who = target.name if target is not None else f"{error.host}:{error.port}"
        return error_answer(502, f"{agent}: cannot reach {who}: {error}", code)
    print(f"{agent}: {route} raised:\n{traceback.format_exc()}", flush=True)
    return error_answer(500, f"{agent}: {route} raised {error!r}", AGENT)
