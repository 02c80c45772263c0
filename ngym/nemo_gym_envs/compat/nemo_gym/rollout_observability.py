"""The observation records a sandbox-owning or agent harness attaches to a rollout (NeMo Gym's
`rollout_observability` contract): a sandbox's outcome and usage, an agent invocation, a tool call's timing, a
context compaction, the gaps a producer could not observe, and the bundle that carries them.

Records refuse unknown fields and are checked on assignment, as NeMo Gym's are, so an environment that fills one
wrongly fails here as it would there. The trajectory records and the joining of model calls (what NeMo Gym's
agents and collection do with them) are not ngym's environments' business and are left out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .config_types import ModelServerRef
from .openai_utils import NeMoGymResponseInputItem


class ObservationModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelCallRef(ObservationModel):
    """One model call, named by its id or by the model server and the response id."""

    model_call_id: str | None = None
    model_ref: ModelServerRef | None = None
    response_id: str | None = None

    @model_validator(mode="after")
    def _joinable(self) -> ModelCallRef:
        if not self.model_call_id and not (self.model_ref is not None and self.response_id):
            raise ValueError("model_call_id or both model_ref and response_id are required")
        return self


class SandboxObservation(ObservationModel):
    """How a sandbox the harness owned ended, and what it measured of it (never configured limits)."""

    kind: Literal["sandbox"] = "sandbox"
    role: Literal["agent", "verifier", "environment"]
    provider: str | None = None
    sandbox_id: str | None = None
    outcome: Literal["completed", "failed", "timeout", "oom", "sandbox_error", "cancelled", "unknown"] = "unknown"
    exit_code: int | None = None
    wall_time_s: float | None = Field(default=None, ge=0)
    cpu_time_s: float | None = Field(default=None, ge=0)
    peak_memory_mib: float | None = Field(default=None, ge=0)
    resource_usage_source: str | None = None
    error_type: str | None = None


class AgentInvocation(ObservationModel):
    """One agent or subagent conversation."""

    kind: Literal["agent_invocation"] = "agent_invocation"
    invocation_id: str
    parent_invocation_id: str | None = None
    spawned_by_tool_call_id: str | None = None
    status: Literal["completed", "failed", "incomplete", "unknown"] = "unknown"
    duration_ms: float | None = Field(default=None, ge=0)
    error_type: str | None = None
    model_calls: list[ModelCallRef] = Field(default_factory=list)
    conversation: list[NeMoGymResponseInputItem] = Field(default_factory=list)


class ToolCallObservation(ObservationModel):
    """When one tool call ran and how it ended."""

    kind: Literal["tool_call"] = "tool_call"
    invocation_id: str
    tool_call_id: str
    sandbox_id: str | None = None
    tool_name: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    duration_ms: float | None = Field(default=None, ge=0)
    timing_source: Literal["executor", "artifact", "harness"] | None = None
    status: Literal["completed", "failed", "timeout", "cancelled", "incomplete", "unknown"] = "unknown"
    error_type: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ToolCallObservation:
        if self.started_at is not None and self.completed_at is not None and self.completed_at < self.started_at:
            raise ValueError("completed_at must not precede started_at")
        return self


class ContextCompactionObservation(ObservationModel):
    """The harness compacted an invocation's context."""

    kind: Literal["context_compaction"] = "context_compaction"
    invocation_id: str
    observed_at: float | None = None
    trigger: str | None = None
    tokens_before: int | None = Field(default=None, ge=0)
    tokens_after: int | None = Field(default=None, ge=0)
    outcome: Literal["completed", "failed", "aborted", "unknown"] = "unknown"
    summary: str | None = None
    first_kept_item_id: str | None = None
    before_model_call: ModelCallRef | None = None
    model_calls: list[ModelCallRef] = Field(default_factory=list)
    after_model_call: ModelCallRef | None = None


class ObservationGap(ObservationModel):
    """Something the producer could not observe or join exactly."""

    code: str
    invocation_id: str | None = None
    detail: str | None = None


AgentObservationRecord = Annotated[
    AgentInvocation | ToolCallObservation | ContextCompactionObservation | SandboxObservation,
    Field(discriminator="kind"),
]


class AgentObservationBundle(ObservationModel):
    """One agent server's observations of one rollout (unordered records, and gaps)."""

    source: str
    records: list[AgentObservationRecord] = Field(default_factory=list)
    gaps: list[ObservationGap] = Field(default_factory=list)

    @model_validator(mode="after")
    def _invocation_tree(self) -> AgentObservationBundle:
        """Invocation ids are unique and parents form no cycle (a parent never observed is allowed)."""
        invocations = [record for record in self.records if isinstance(record, AgentInvocation)]
        parents: dict[str, Any] = {record.invocation_id: record.parent_invocation_id for record in invocations}
        if len(parents) != len(invocations):
            raise ValueError("invocation_id must be unique within an observation bundle")
        for start in parents:
            seen, node = set(), start
            while node in parents:
                if node in seen:
                    raise ValueError("parent_invocation_id must not form a cycle")
                seen.add(node)
                node = parents[node]
        return self
