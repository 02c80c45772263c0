"""simple_agent: call the model; run each function call on the resources server; repeat until an answer.

With several replicas of the model server or the resources server, each rollout holds one replica of each, the
least loaded when it starts (ngym.upstream.routing): its session lives there. A replica that cannot be reached
fails the rollouts it held (the collector retries them) and leaves rotation until it answers again.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import Field

from ngym.http.app import HttpError, error_message, error_object
from ngym.http.client import NO_RETRY, HttpClient, HttpResult, Timeouts, UpstreamError
from ngym.http.cookies import CookieStore
from ngym.rollouts.failures import AGENT, MODEL, TOOL, VERIFY, is_task_refusal
from ngym.servers.agent import Agent, AgentConfig
from ngym.servers.base import ServerReference
from ngym.servers.resources import CONTROL_ROUTES
from ngym.upstream.pool import Upstream
from ngym.upstream.routing import ReplicaRouter

# OpenAI's rule for function names; it also keeps a name a single path segment.
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class SimpleAgentConfig(AgentConfig):
    resources_server: ServerReference
    model_server: ServerReference
    max_steps: int | None = Field(default=10, ge=1)
    request_timeout_s: float = Field(default=3600.0, gt=0, description="per model or tool call")


class AgentFailure(HttpError):
    """The rollout cannot go on (a server failed); never to be scored as a reward. `failure_class` (error.code)
    says which part failed: model, tool (seed_session too), verify or agent."""

    def __init__(self, message: str, failure_class: str = AGENT):
        super().__init__(502, message, error_type="rollout_failed", code=failure_class)


@dataclass(slots=True)
class Route:
    """The replicas one rollout talks to, and their routers (to report a replica that cannot be reached). The
    model replica can change mid-rollout (`move_model`): every model call carries the whole history."""

    model: Upstream
    resources: Upstream
    models: ReplicaRouter
    environments: ReplicaRouter
    holds: contextlib.ExitStack

    def move_model(self) -> bool:
        """Another model replica for the rest of the rollout, when the current one left rotation and one is
        healthy; False otherwise."""
        if self.model.healthy or not any(replica.healthy for replica in self.models.replicas):
            return False
        self.model = self.holds.enter_context(self.models.hold())
        return True


class SimpleAgent(Agent[SimpleAgentConfig]):
    config_model = SimpleAgentConfig

    @classmethod
    def http_client(cls, config: SimpleAgentConfig) -> HttpClient:
        # No retries here: the model server retries vLLM, tool calls and /seed_session may change the
        # environment, and ng_collect_rollouts retries whole rollouts. One budget per layer.
        return HttpClient(timeouts=Timeouts(total=config.request_timeout_s), retry=NO_RETRY)

    async def startup(self) -> None:
        self.models = ReplicaRouter(self.directory.urls(self.config.model_server.as_ref()), self.http)
        self.environments = ReplicaRouter(self.directory.urls(self.config.resources_server.as_ref()), self.http)
        self.models.start()
        self.environments.start()

    async def shutdown(self) -> None:
        await self.models.stop()
        await self.environments.stop()

    @contextlib.asynccontextmanager
    async def _route(self) -> AsyncIterator[Route]:
        with contextlib.ExitStack() as holds:
            model = holds.enter_context(self.models.hold())
            resources = holds.enter_context(self.environments.hold())
            yield Route(model, resources, self.models, self.environments, holds)

    async def respond(self, params: dict[str, Any], cookies: CookieStore) -> dict[str, Any]:
        async with self._route() as route:
            return await self._respond(params, cookies, route)

    async def _respond(self, params: dict[str, Any], cookies: CookieStore, route: Route) -> dict[str, Any]:
        history = _as_items(params["input"])
        tools = callable_tools(params.get("tools"))
        produced: list[dict[str, Any]] = []
        response: dict[str, Any] = {}
        steps = 0
        while self.config.max_steps is None or steps < self.config.max_steps:
            steps += 1
            response = await self._call_model({**params, "input": history + produced}, cookies, route)
            output = response.get("output") or []
            produced.extend(output)
            calls = [item for item in output if item.get("type") == "function_call"]
            if not calls or response.get("status") == "incomplete":
                break
            for call in calls:
                produced.append(await self._run_tool(call, tools, cookies, route))
        return {**response, "output": produced}

    async def run(self, row: dict[str, Any]) -> dict[str, Any]:
        async with self._route() as route:
            return await self._run_rollout(row, route)

    async def _run_rollout(self, row: dict[str, Any], route: Route) -> dict[str, Any]:
        cookies = CookieStore()
        resources_url = route.resources.base_url
        seed = await self._post(route, route.resources, "/seed_session", row, cookies, TOOL)
        _raise_unless_ok(seed, "resources server /seed_session", TOOL)
        try:
            response = await self._respond(row["responses_create_params"], cookies, route)
        except HttpError as exc:
            if exc.param and exc.status < 500:  # the model server named a field of the row's request
                exc.param = f"responses_create_params.{exc.param}"
            raise
        verified = await self._post(route, route.resources, "/verify", {**row, "response": response}, cookies, VERIFY)
        _raise_unless_ok(verified, "resources server /verify", VERIFY)
        body = verified.json()
        if not isinstance(body, dict) or "reward" not in body:
            raise AgentFailure(f"resources server /verify at {resources_url} answered without a reward", VERIFY)
        return body

    async def _call_model(self, params: dict[str, Any], cookies: CookieStore, route: Route) -> dict[str, Any]:
        for _ in range(len(route.models.replicas)):
            try:
                result = await self._post(route, route.model, "/v1/responses", params, cookies, MODEL)
                break
            except AgentFailure:
                # A model replica that cannot be reached never saw the call; the history is all in the request.
                if not route.move_model():
                    raise
        else:
            raise AgentFailure(f"no replica of {self.config.model_server.name} could be reached", MODEL)
        _raise_unless_ok(result, "model server /v1/responses", MODEL)
        body = result.json()
        if not isinstance(body, dict):
            raise AgentFailure(f"model server at {route.model.base_url} answered with a non-object", MODEL)
        return body

    async def _run_tool(
        self, call: dict[str, Any], tools: frozenset[str], cookies: CookieStore, route: Route
    ) -> dict[str, Any]:
        name, call_id = str(call.get("name")), call.get("call_id")
        if name not in tools:
            # The model chose the name: only the request's own tools reach the resources server.
            offered = ", ".join(sorted(tools)) or "none"
            return _tool_output(call_id, {"error": f"{name!r} is not a tool of this request (its tools: {offered})"})
        try:
            arguments = orjson.loads(call.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            return _tool_output(call_id, {"error": f"the arguments of {name} are not valid JSON: {exc}"})
        if not isinstance(arguments, dict):
            return _tool_output(call_id, {"error": f"the arguments of {name} must be a JSON object"})
        result = await self._post(route, route.resources, f"/{name}", arguments, cookies, TOOL)
        if result.status >= 500:
            raise AgentFailure(f"tool {name} on {route.resources.base_url} failed with HTTP {result.status}", TOOL)
        # A tool's 4xx (unknown tool, bad arguments) is the model's mistake: it sees the error body.
        return {"type": "function_call_output", "call_id": call_id, "output": result.body.decode()}

    async def _post(
        self, route: Route, replica: Upstream, path: str, payload: Any, cookies: CookieStore, failure_class: str
    ) -> HttpResult:
        base = replica.base_url
        headers = cookies.header(base)
        try:
            with self.tracing.call(_span_name(path, failure_class), headers, **{"ngym.url": base + path}):
                result = await self.http.post_json(base + path, payload, headers)
        except UpstreamError as exc:
            # The rollout's session lives on this replica: the rollout fails here; the collector retries it.
            (route.models if replica is route.model else route.environments).failed(replica, exc)
            raise AgentFailure(f"{path} on {exc.url}: {exc.reason}", failure_class) from None
        cookies.update(base, result)
        return result


def _span_name(path: str, failure_class: str) -> str:
    """A trace span's name for one call: `model call`, `tool call /<name>`, `seed_session` or `verify`."""
    if failure_class == MODEL:
        return "model call"
    if path in ("/seed_session", "/verify"):
        return path[1:]
    return f"tool call {path}"


def callable_tools(tools: Any) -> frozenset[str]:
    """The function tools a request declares (Responses' flat shape, or Chat's), that can be a route name and
    are not a resources server's control route."""
    names = set()
    for tool in tools if isinstance(tools, list) else []:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
        if isinstance(name, str) and TOOL_NAME.fullmatch(name) and name not in CONTROL_ROUTES:
            names.add(name)
    return frozenset(names)


def _as_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`input` as checked by the Agent base class: a string, or a list of items."""
    return [{"role": "user", "content": value}] if isinstance(value, str) else list(value)


def _tool_output(call_id: Any, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": orjson.dumps(body).decode()}


def _raise_unless_ok(result: HttpResult, what: str, failure_class: str) -> None:
    if result.ok:
        return
    said = error_message(result.body, raw_limit=500)[:1000]
    if is_task_refusal(result.status):
        # The caller's request (the task row) was refused: pass the 4xx on, saying who refused it and which field.
        param = error_object(result.body).get("param")
        raise HttpError(
            result.status,
            f"{what} at {result.url} rejected the task (HTTP {result.status}): {said}",
            param=param if isinstance(param, str) else None,
        )
    raise AgentFailure(f"{what} at {result.url} answered HTTP {result.status}: {said}", failure_class)
