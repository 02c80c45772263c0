"""ngym's `nemo_gym.base_responses_api_agent` (the base of NeMo Gym's agents): agent sessions, the answer a
failed route gives (its failure class in `error.code`, as ngym's collector reads it), rollout-prefixed URLs and
usage accumulation. The routes themselves are exercised end to end (tests/nemo_gym_envs/test_agents_end_to_end.py:
FastAPI is installed only in an environment's venv)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from starlette.exceptions import HTTPException
from yarl import URL

from ngym.nemo_gym_envs.compat.nemo_gym import _runtime
from ngym.nemo_gym_envs.compat.nemo_gym._agent_failures import answer_for, target_of
from ngym.nemo_gym_envs.compat.nemo_gym._agent_sessions import AgentSessions, AgentSessionSetupError
from ngym.nemo_gym_envs.compat.nemo_gym.base_responses_api_agent import (
    AgentCloseSessionRequest,
    AgentCloseSessionResponse,
    AgentSeedSessionRequest,
    AgentSessionState,
    BaseResponsesAPIAgentConfig,
    SimpleResponsesAPIAgent,
)
from ngym.nemo_gym_envs.compat.nemo_gym.episode_types import EpisodeId, TaskId
from ngym.nemo_gym_envs.compat.nemo_gym.openai_utils import accumulate_response_usage
from ngym.nemo_gym_envs.compat.nemo_gym.server_utils import ServerClient

MODEL_URL, ENV_URL, AGENT_URL = "http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003"
GLOBAL_CONFIG = {
    "policy_model": {"responses_api_models": {"vllm_model": {"host": "127.0.0.1", "port": 7001}}},
    "env": {"resources_servers": {"example": {"host": "127.0.0.1", "port": 7002}}},
    "inner_agent": {"responses_api_agents": {"other_agent": {"host": "127.0.0.1", "port": 7003}}},
}


@pytest.fixture
def in_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as an agent's process of a run with a model, an environment and another agent."""
    urls = {"policy_model": MODEL_URL, "env": ENV_URL, "inner_agent": AGENT_URL}
    runtime = _runtime.Runtime("my_agent", Path("/nowhere"), Path("/nowhere"), GLOBAL_CONFIG, urls)
    monkeypatch.setattr(_runtime, "_installed", [runtime])


TASK = TaskId(taskset="examples", task_id="t1")


def seed_request(session: str = "s1", episode: str = "e1") -> AgentSeedSessionRequest:
    return AgentSeedSessionRequest(agent_session_id=session, episode_id=EpisodeId(rollout_id=episode), task_id=TASK)


def close_request(session: str = "s1", episode: str = "e1") -> AgentCloseSessionRequest:
    return AgentCloseSessionRequest(agent_session_id=session, episode_id=EpisodeId(rollout_id=episode))


# --- agent sessions ---------------------------------------------------------------------------------------------


async def test_a_seed_is_idempotent_and_binds_its_id_to_one_request() -> None:
    sessions, made = AgentSessions(), []

    async def make(body: Any) -> AgentSessionState:
        made.append(body)
        return AgentSessionState(request=body)

    await sessions.seed(seed_request(), None, make)
    await sessions.seed(seed_request(), None, make)  # the same request again: the same session
    assert len(made) == 1 and sessions.active("s1").request == seed_request()
    with pytest.raises(HTTPException) as other:
        await sessions.seed(seed_request(episode="e2"), None, make)
    assert other.value.status_code == 409
    with pytest.raises(HTTPException) as cookie:
        await sessions.seed(seed_request("s2"), "s1", make)  # the caller's cookie names another session
    assert cookie.value.status_code == 409 and "cookie" in cookie.value.detail


async def test_a_close_is_kept_for_retries_and_refuses_a_late_seed() -> None:
    sessions, released = AgentSessions(), []

    async def make(body: Any) -> AgentSessionState:
        return AgentSessionState(request=body)

    async def release(state: AgentSessionState) -> AgentCloseSessionResponse:
        released.append(state)
        return AgentCloseSessionResponse(agent_session_id=state.request.agent_session_id, resources_cookies={"a": "b"})

    unknown = AgentCloseSessionResponse(agent_session_id="s1")
    await sessions.seed(seed_request(), None, make)
    first = await sessions.close(close_request(), None, 300, release, unknown)
    again = await sessions.close(close_request(), None, 300, release, unknown)
    assert first == again and first.resources_cookies == {"a": "b"} and len(released) == 1
    with pytest.raises(HTTPException, match="already closed"):
        await sessions.seed(seed_request(), None, make)
    with pytest.raises(HTTPException, match="episode_id"):
        await sessions.close(close_request(episode="e9"), None, 300, release, unknown)
    with pytest.raises(HTTPException, match="closing"):
        sessions.active("s1")
    # An id never seeded closes all the same, and its seed is then refused.
    assert await sessions.close(close_request("s3"), None, 300, release, unknown) is unknown
    with pytest.raises(HTTPException, match="already closed"):
        await sessions.seed(seed_request("s3"), None, make)


async def test_a_failed_seed_leaves_nothing_unless_it_keeps_partial_state() -> None:
    sessions = AgentSessions()

    async def fails(body: Any) -> AgentSessionState:
        raise RuntimeError("no sandbox")

    async def fails_part_way(body: Any) -> AgentSessionState:
        raise AgentSessionSetupError(AgentSessionState(request=body), error=RuntimeError("half made"))

    with pytest.raises(RuntimeError, match="no sandbox"):
        await sessions.seed(seed_request(), None, fails)
    assert "s1" not in sessions.records
    with pytest.raises(RuntimeError, match="half made"):
        await sessions.seed(seed_request("s2"), None, fails_part_way)
    assert sessions.records["s2"].state is not None and sessions.records["s2"].closing  # kept for a close
    with pytest.raises(HTTPException, match="closing"):
        sessions.active("s2")


# --- a failed route's answer ------------------------------------------------------------------------------------


def response_error(url: str, status: int, body: bytes = b"") -> aiohttp.ClientResponseError:
    info = aiohttp.RequestInfo(URL(url), "POST", CIMultiDictProxy(CIMultiDict()), URL(url))
    error = aiohttp.ClientResponseError(info, (), status=status, message="failed")
    error.response_content = body  # type: ignore[attr-defined]  # as raise_for_status keeps it
    return error


def answered(response: Any) -> tuple[int, dict[str, Any]]:
    return response.status_code, orjson.loads(response.body)["error"]


@pytest.mark.usefixtures("in_a_run")
@pytest.mark.parametrize(
    ("url", "status", "body", "expected_status", "expected_code"),
    [
        (MODEL_URL + "/v1/responses", 500, b"vLLM is down", 502, "model"),
        (ENV_URL + "/verify", 500, b"", 502, "verify"),
        (ENV_URL + "/step", 503, b"", 502, "tool"),
        (ENV_URL + "/reset", 422, b'{"detail": "missing field"}', 422, "invalid_task"),
        (MODEL_URL + "/v1/responses", 429, b"", 502, "model"),  # rate limited: not the task's fault
        (AGENT_URL + "/run", 502, b'{"error": {"code": "tool", "message": "x"}}', 502, "tool"),
        ("http://127.0.0.1:9/elsewhere", 500, b"", 502, "agent"),
    ],
)
def test_a_failed_call_answers_with_the_class_of_the_part_that_failed(
    url: str, status: int, body: bytes, expected_status: int, expected_code: str
) -> None:
    got_status, error = answered(answer_for("my_agent", "/run", response_error(url, status, body)))
    assert (got_status, error["code"]) == (expected_status, expected_code)
    assert str(status) in error["message"] and (url.split("/")[2] in error["message"])


@pytest.mark.usefixtures("in_a_run")
def test_anything_else_the_agent_raises_is_its_own_failure() -> None:
    status, error = answered(answer_for("my_agent", "/run", KeyError("responses_create_params")))
    assert status == 500 and error["code"] == "agent"
    assert error["message"].startswith("my_agent: /run raised KeyError")


@pytest.mark.usefixtures("in_a_run")
def test_targets_are_the_runs_instances() -> None:
    target = target_of("http://localhost:7002/verify")
    assert target is not None and (target.name, target.server_type) == ("env", "resources_servers")
    assert target_of("http://127.0.0.1:9999/") is None


def test_outside_a_run_no_url_is_an_instance() -> None:
    assert target_of(MODEL_URL) is None


# --- rollout-prefixed URLs and usage ----------------------------------------------------------------------------


class EchoAgent(SimpleResponsesAPIAgent):
    async def responses(self, body: Any) -> Any:
        return body

    async def run(self, body: Any) -> Any:
        return body


def agent(**settings: Any) -> EchoAgent:
    config = BaseResponsesAPIAgentConfig(host="127.0.0.1", port=7004, entrypoint="app.py", name="my_agent")
    return EchoAgent(config=config, server_client=ServerClient(global_config_dict={**GLOBAL_CONFIG, **settings}))


def test_model_paths_carry_the_rollout_only_when_the_run_captures_it() -> None:
    body = {"_ng_task_index": 3, "_ng_rollout_index": 1}
    assert agent().url_path_for_run("/v1/responses", body) == "/v1/responses"  # ngym: capture off
    capturing = agent(observability_enabled=True)
    assert capturing.url_path_for_run("/v1/responses", body) == "/ng-rollout/3-1/v1/responses"
    assert capturing.base_url_for_run(MODEL_URL, body) == MODEL_URL + "/ng-rollout/3-1"
    training = agent(token_id_capture={"enabled": True, "all_agents": True})
    assert training.url_path_for_run("/v1/responses", body) == "/ng-rollout/3-1/training-token-capture/v1/responses"
    assert agent().resolve_model_base_url("policy_model") == MODEL_URL + "/v1"
    assert agent().resolve_model_base_url("policy_model", "7-0") == MODEL_URL + "/ng-rollout/7-0/v1"


def test_usage_adds_up_and_unknown_counts_stay_unknown() -> None:
    details = {"input_tokens_details": {"cached_tokens": 2}, "output_tokens_details": {"reasoning_tokens": 1}}
    first = {"input_tokens": 10, "output_tokens": 4, "total_tokens": 14, **details}
    chat_shaped = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    both = accumulate_response_usage(first, first)
    assert both is not None and (both.input_tokens, both.output_tokens, both.total_tokens) == (20, 8, 28)
    assert both.input_tokens_details.cached_tokens == 4 and both.output_tokens_details.reasoning_tokens == 2
    mixed = accumulate_response_usage(both, chat_shaped)
    assert mixed is not None and mixed.total_tokens == 36 and mixed.input_tokens_details.cached_tokens is None
    assert accumulate_response_usage(None, None) is None
    assert accumulate_response_usage(None, chat_shaped) == accumulate_response_usage(chat_shaped, None)
