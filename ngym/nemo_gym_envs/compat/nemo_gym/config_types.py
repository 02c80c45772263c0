"""Configuration and reference types of NeMo Gym's servers: a server's own config, references to other servers
by name, and the /aggregate_metrics body and answer."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field

ROLLOUT_PATH_PREFIX = "ng-rollout"  # `/ng-rollout/<id>/...`: a request of one rollout (rollout_correlation)
TOKEN_CAPTURE_PATH_SEGMENT = "training-token-capture"  # `/ng-rollout/<id>/training-token-capture/...`


class Domain(str, Enum):  # noqa: UP042 (as NeMo Gym declares it)
    MATH = "math"
    CODING = "coding"
    AGENT = "agent"
    KNOWLEDGE = "knowledge"
    INSTRUCTION_FOLLOWING = "instruction_following"
    LONG_CONTEXT = "long_context"
    SAFETY = "safety"
    GAMES = "games"
    TRANSLATION = "translation"
    E2E = "e2e"
    OTHER = "other"


class BaseServerConfig(BaseModel):
    host: str
    port: int
    num_workers: int | None = None


class BaseRunServerConfig(BaseServerConfig):
    entrypoint: str
    domain: Domain | str | None = None


class BaseRunServerInstanceConfig(BaseRunServerConfig):
    name: str


class ModelServerRef(BaseModel):
    type: Literal["responses_api_models"]
    name: str


class ResourcesServerRef(BaseModel):
    type: Literal["resources_servers"]
    name: str


class AgentServerRef(BaseModel):
    type: Literal["responses_api_agents"]
    name: str


class AggregateMetricsRequest(BaseModel):
    """POST /aggregate_metrics: verify responses, each with at least `_ng_task_index` and `reward`."""

    verify_responses: list[dict[str, Any]]


class AggregateMetrics(BaseModel):
    group_level_metrics: list[dict[str, Any]] = Field(default_factory=list)
    agent_metrics: dict[str, Any] = Field(default_factory=dict)
    key_metrics: dict[str, Any] = Field(default_factory=dict)
    perf_summary: dict[str, Any] | None = None
    repeat_level_metrics: list[dict[str, Any]] = Field(default_factory=list)
