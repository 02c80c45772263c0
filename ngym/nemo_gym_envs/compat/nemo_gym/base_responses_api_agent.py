"""NeMo Gym's agent server: a pydantic model whose `setup_webserver()` builds a FastAPI app with `/v1/responses`
(also under a rollout's `/ng-rollout/<id>/` prefix), `/run` (one rollout, run inside its rollout context),
`/aggregate_metrics` and the agent-session routes. A subclass writes `responses` and `run`, and calls the run's
other servers by instance name through `self.server_client`.

On ngym a failed `/run` answers in the shape ngym's collector reads (`_agent_failures`): the failure's class in
`error.code` rather than NeMo Gym's 500 with the exception's repr.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from functools import wraps
from typing import Any
from warnings import warn

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ._agent_failures import answer_for
from ._agent_sessions import AgentSessions, AgentSessionState
from ._agent_sessions import AgentSessionSetupError as AgentSessionSetupError
from ._agent_sessions import SessionRecord as _AgentSessionRecord
from .base_resources_server import BaseRunRequest, BaseVerifyResponse
from .config_types import (
    ROLLOUT_PATH_PREFIX,
    TOKEN_CAPTURE_PATH_SEGMENT,
    AggregateMetrics,
    AggregateMetricsRequest,
    BaseRunServerInstanceConfig,
)
from .episode_types import EpisodeId, TaskId
from .global_config import OBSERVABILITY_ENABLED_KEY_NAME, TOKEN_ID_CAPTURE_BLOCK, get_first_server_config_dict
from .openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from .reward_profile import AggregateMetricsMixin, compute_aggregate_metrics
from .rollout_correlation import maybe_rollout_id_from_run_body, rollout_context
from .server_utils import BaseServer, SimpleServer, apply_rollout_prefix, rollout_path_prefix

__all__ = [
    "AGENT_SESSION_COOKIE_KEY",
    "AgentCloseSessionRequest",
    "AgentCloseSessionResponse",
    "AgentSeedSessionRequest",
    "AgentSeedSessionResponse",
    "AgentSessionSetupError",
    "AgentSessionState",
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "BaseResponsesAPIAgent",
    "BaseResponsesAPIAgentConfig",
    "SimpleResponsesAPIAgent",
    "_AgentSessionRecord",
]

AGENT_SESSION_COOKIE_KEY = "agent_session_id"  # in the session cookie: binds later calls to their agent session


def __getattr__(name: str) -> Any:
    # FastAPI's `Body`, which agents import from here; FastAPI is imported only when an agent asks for it.
    if name == "Body":
        from fastapi import Body

        return Body
    raise AttributeError(f"module 'nemo_gym.base_responses_api_agent' has no attribute {name!r}")


def _unique_names(accesses: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    names = [access.get("name") for access in accesses]
    if len(names) != len(set(names)):
        raise ValueError(f"{what} tool access names must be unique")
    return accesses


class AgentSeedSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_session_id: str = Field(min_length=1)
    episode_id: EpisodeId
    task_id: TaskId
    tool_accesses: list[dict[str, Any]] = Field(default_factory=list)
    sandbox_access: dict[str, Any] | None = None

    @field_validator("tool_accesses")
    @classmethod
    def _unique(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _unique_names(value, "an agent session's")


class AgentSeedSessionResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_session_id: str


class AgentCloseSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_session_id: str
    episode_id: EpisodeId


class AgentCloseSessionResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_session_id: str
    agent_observations: Any = None
    resources_cookies: dict[str, str] | None = None


class BaseResponsesAPIAgentConfig(BaseRunServerInstanceConfig):
    session_close_retry_window_seconds: float = Field(default=300, gt=0, allow_inf_nan=False)
    skip_verification: bool = False  # the agent's reward is skip_verification_reward, /verify is not called
    skip_verification_reward: float = 0.0
    token_id_capture: bool = False
    tool_accesses: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("tool_accesses")
    @classmethod
    def _unique(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _unique_names(value, "configured")


class BaseResponsesAPIAgent(BaseServer):
    config: BaseResponsesAPIAgentConfig


class SimpleResponsesAPIAgent(BaseResponsesAPIAgent, AggregateMetricsMixin, SimpleServer):
    config: BaseResponsesAPIAgentConfig
    _sessions: AgentSessions = PrivateAttr(default_factory=AgentSessions)

    def setup_webserver(self) -> Any:
        from fastapi import FastAPI

        app = FastAPI()
        self.setup_session_middleware(app)
        for prefix in ("", f"/{ROLLOUT_PATH_PREFIX}/{{rollout_id}}",
                       f"/{ROLLOUT_PATH_PREFIX}/{{rollout_id}}/{TOKEN_CAPTURE_PATH_SEGMENT}"):  # fmt: skip
            app.post(f"{prefix}/v1/responses")(self.responses)
        run = self.run

        @wraps(run)
        async def run_in_rollout_context(*args: Any, **kwargs: Any) -> Any:
            body = kwargs.get("body")
            if body is None:
                body = next((arg for arg in args if isinstance(arg, BaseRunRequest)), None)
            with rollout_context(self.rollout_id_from_run(body)):
                return await run(*args, **kwargs)

        app.post("/run")(run_in_rollout_context)
        app.post("/aggregate_metrics")(self.aggregate_metrics)
        app.post("/v1/agent_sessions")(self.seed_agent_session)
        app.post("/v1/agent_sessions/close")(self.close_agent_session)
        return app

    def setup_exception_middleware(self, app: Any) -> None:
        """A route that raises answers in the shape ngym's collector reads, its failure class in `error.code`."""
        name = self.config.name

        @app.middleware("http")
        async def failures_with_their_class(request: Any, call_next: Any) -> Any:
            try:
                return await call_next(request)
            except Exception as error:
                return answer_for(name, request.url.path, error)

    # --- agent sessions -------------------------------------------------------------------------------------

    @staticmethod
    def _agent_session_id_from_request(request: Request | None) -> str | None:
        try:
            session = request.session if request is not None else None
        except (AssertionError, AttributeError):
            return None
        if not isinstance(session, Mapping) or AGENT_SESSION_COOKIE_KEY not in session:
            return None
        marker = session[AGENT_SESSION_COOKIE_KEY]
        if not isinstance(marker, str) or not marker:
            raise HTTPException(409, "Invalid agent session marker")
        return marker

    def _require_agent_session(self, agent_session_id: str) -> AgentSessionState:
        return self._sessions.active(agent_session_id)

    def effective_tool_accesses(self, request: AgentSeedSessionRequest) -> list[dict[str, Any]]:
        """The configured tool accesses, overlaid by name with the session's own."""
        accesses = {access.get("name"): access for access in self.config.tool_accesses}
        accesses.update((access.get("name"), access) for access in request.tool_accesses)
        return list(accesses.values())

    async def seed_agent_session(self, request: Request, body: AgentSeedSessionRequest) -> AgentSeedSessionResponse:
        if self.config.num_workers not in (None, 1):
            raise ValueError("Agent sessions require num_workers=1")
        await self._sessions.seed(body, self._agent_session_id_from_request(request), self._seed_agent_session_state)
        request.session[AGENT_SESSION_COOKIE_KEY] = body.agent_session_id
        return AgentSeedSessionResponse(agent_session_id=body.agent_session_id)

    async def close_agent_session(self, request: Request, body: AgentCloseSessionRequest) -> AgentCloseSessionResponse:
        if type(self)._close_agent_session_state is SimpleResponsesAPIAgent._close_agent_session_state:
            raise NotImplementedError("This agent does not implement episode sessions")
        result = await self._sessions.close(
            body,
            self._agent_session_id_from_request(request),
            self.config.session_close_retry_window_seconds,
            self._close_agent_session_state,
            AgentCloseSessionResponse(agent_session_id=body.agent_session_id),
        )
        request.session[AGENT_SESSION_COOKIE_KEY] = body.agent_session_id  # a stale call cannot go sessionless
        return result

    async def _seed_agent_session_state(self, body: AgentSeedSessionRequest) -> AgentSessionState:
        raise NotImplementedError("This agent does not implement episode sessions")

    async def _close_agent_session_state(self, state: AgentSessionState) -> AgentCloseSessionResponse:
        raise NotImplementedError("This agent does not implement episode sessions")

    # --- rollout correlation (NeMo Gym's capture; off unless the run enables it, which ngym never does) -------

    def _global_config(self) -> Mapping[str, Any]:
        config = getattr(self.server_client, "global_config_dict", None)
        return config if isinstance(config, Mapping) else {}

    def _model_call_capture_enabled(self) -> bool:
        return bool(self._global_config().get(OBSERVABILITY_ENABLED_KEY_NAME, False))

    def _token_id_capture_enabled(self) -> bool:
        block = self._global_config().get(TOKEN_ID_CAPTURE_BLOCK) or {}
        if not isinstance(block, Mapping) or not block.get("enabled", False):
            return False
        return bool(block.get("all_agents", False)) or self.config.token_id_capture

    def _capture_correlation_enabled(self) -> bool:
        return self._model_call_capture_enabled() or self._token_id_capture_enabled()

    def rollout_id_from_run(self, body: Any) -> str | None:
        return maybe_rollout_id_from_run_body(body) if self._capture_correlation_enabled() else None

    def url_path_for_run(self, url_path: str, body: Any) -> str:
        """`url_path` under this run's rollout prefix (unchanged when capture is off)."""
        prefix = rollout_path_prefix(self.rollout_id_from_run(body), token_capture=self._token_id_capture_enabled())
        return f"{prefix}{url_path}"

    def base_url_for_run(self, base_url: str, body: Any) -> str:
        return apply_rollout_prefix(
            base_url, self.rollout_id_from_run(body), token_capture=self._token_id_capture_enabled()
        )

    def url_path_for_request(self, url_path: str, request: Request | None) -> str:
        """`url_path` under the rollout prefix the inbound request came with, if any."""
        params = getattr(request, "path_params", None)
        rollout_id = params.get("rollout_id") if isinstance(params, Mapping) else None
        path = getattr(getattr(request, "url", None), "path", "")
        capture = f"/{TOKEN_CAPTURE_PATH_SEGMENT}/" in path
        return f"{rollout_path_prefix(rollout_id, token_capture=capture)}{url_path}"

    def resolve_model_base_url(self, model_server_name: str, rollout_id: str | None = None) -> str:
        """A model server's OpenAI base URL (`.../v1`), under the rollout's prefix when given one."""
        section = get_first_server_config_dict(self.server_client.global_config_dict, model_server_name)
        base = self.server_client._build_server_base_url(section)
        return f"{apply_rollout_prefix(base, rollout_id, token_capture=self._token_id_capture_enabled())}/v1"

    # --- what an agent writes ---------------------------------------------------------------------------------

    @abstractmethod
    async def responses(self, body: NeMoGymResponseCreateParamsNonStreaming) -> NeMoGymResponse: ...

    @abstractmethod
    async def run(self, body: BaseRunRequest) -> BaseVerifyResponse: ...

    async def aggregate_metrics(self, body: AggregateMetricsRequest) -> AggregateMetrics:
        """NeMo Gym's metrics over the rollouts (agents that verify elsewhere pass this on to their server)."""
        if self.config.skip_verification:
            warn("skip_verification=True: no aggregate metrics", RuntimeWarning, stacklevel=2)
            return AggregateMetrics()
        return compute_aggregate_metrics(
            body.verify_responses,
            compute_metrics_fn=self.compute_metrics,
            get_key_metrics_fn=self.get_key_metrics,
            compute_repeat_metrics_fn=self.compute_repeat_metrics,
        )
