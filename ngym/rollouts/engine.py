"""Run rollouts through their agents' /run, a bounded number at once, and hand back each as it ends.

The one loop under both ng_collect_rollouts (which writes files) and the Python API (which yields to a
trainer). Every rollout ends as an Outcome: its scored row, or its failure with a class. The scheduling
(ngym.rollouts.bounded) hands back every outcome exactly once and always returns; a stop (Ctrl-C, too many
failures in a row, the caller) is seen at once, also while waiting for a free slot: what has ended is handed
back, the rollouts still in flight are cancelled and the rest never start.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ngym.http.client import HttpClient, RetryPolicy, Timeouts, UpstreamError
from ngym.observability.tracing import rollout_header
from ngym.rollouts.bounded import run_bounded
from ngym.rollouts.failures import AGENT, RolloutFailed, from_agent_answer, from_upstream_error, reported_failure
from ngym.rollouts.keys import AGENT_REF, ROLLOUT_INDEX, TASK_INDEX
from ngym.rollouts.tasks import Task
from ngym.upstream.routing import ReplicaRouter


@dataclass(frozen=True, slots=True)
class Outcome:
    task: Task
    row: dict[str, Any] | None  # the scored row (NeMo Gym's shape), when the rollout finished
    failure: RolloutFailed | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def failure_record(self) -> dict[str, Any]:
        assert self.failure is not None
        return {**row_keys(self.task), **self.failure.record()}


AgentUrls = Mapping[str, str | Sequence[str]]  # agent name -> its URL, or every replica's
# How long a rollout whose agent replicas are all gone waits for one to be back (ng_run restarts them).
REPLICA_BACK_S = 60.0


def rollout_client(rollout_timeout_s: float, max_attempts: int) -> HttpClient:
    """The client every collection sends its /run requests with (the CLI's and the Python API's): a rollout's
    whole time is its timeout, and an answer of 429/5xx or a dropped connection is tried again within
    `max_attempts` and that time."""
    return HttpClient(
        timeouts=Timeouts(total=rollout_timeout_s),
        retry=RetryPolicy(max_attempts=max_attempts, deadline=rollout_timeout_s),
    )


async def run_rollouts(
    http: HttpClient,
    agent_urls: AgentUrls,
    tasks: Iterable[Task],
    max_in_flight: int,
    stop: asyncio.Event,
) -> AsyncGenerator[Outcome, None]:
    """Each task's Outcome as it ends, at most `max_in_flight` at once. A rollout goes to the least-loaded
    healthy replica of its agent (the model server's pool rules); one that cannot be reached leaves rotation
    until it answers again. Leaving the loop early (break, an exception, a stop) cancels what is in flight."""
    routers = {name: ReplicaRouter([urls] if isinstance(urls, str) else list(urls), http)
               for name, urls in agent_urls.items()}  # fmt: skip
    # With several replicas, a refused or dropped connection moves the rollout at once instead of retrying in place.
    moving = dataclasses.replace(http.retry, reconnect=False)
    retries = {name: moving if len(router.replicas) > 1 else None for name, router in routers.items()}
    for router in routers.values():
        router.start()
    outcomes = run_bounded(
        tasks, lambda task: run_rollout(http, routers[task.agent], task, retries[task.agent]), max_in_flight, stop
    )
    try:
        async for outcome in outcomes:
            yield outcome
    finally:
        await outcomes.aclose()
        for router in routers.values():
            await router.stop()


async def run_rollout(http: HttpClient, agent: ReplicaRouter, task: Task, retry: RetryPolicy | None) -> Outcome:
    """One rollout on a replica of its agent (`retry`: the /run policy, None for the client's own); any exception a
    request can raise ends as a classified failure, never escapes. A replica that cannot be reached never saw the
    rollout: it leaves rotation and the rollout goes to the next one at once, and each replica may be tried twice
    (it may be back from a restart by then)."""
    several = len(agent.replicas) > 1
    for _ in range(2 * len(agent.replicas)):
        with agent.hold() as replica:
            try:
                return Outcome(task, await _scored_row(http, replica.base_url, task, retry))
            except UpstreamError as exc:
                agent.failed(replica, exc)  # out of rotation if unreachable and not the only replica
                if replica.healthy or not several:  # slow, not gone; or nowhere else to go (retried in place)
                    return Outcome(task, None, from_upstream_error(exc))
                # Gone: another replica takes the rollout; when every one is gone, the first back takes it.
                if not await agent.any_back(REPLICA_BACK_S):
                    return Outcome(task, None, from_upstream_error(exc))
            except RolloutFailed as failure:
                return Outcome(task, None, failure)
            except Exception as exc:  # every rollout ends counted: finished, or failed with its class and reason
                return Outcome(task, None, RolloutFailed(AGENT, f"{type(exc).__name__}: {exc}"))
    return Outcome(task, None, RolloutFailed(AGENT, f"no replica of agent {task.agent!r} could be reached"))


async def _scored_row(http: HttpClient, agent_url: str, task: Task, retry: RetryPolicy | None) -> dict[str, Any]:
    # The indices travel as a header, not in the row, so the environment sees the row as it is (traces read them).
    headers = rollout_header(task.task_index, task.rollout_index)
    result = await http.post_json(agent_url + "/run", task.row, headers, retry=retry)
    if not result.ok:
        raise from_agent_answer(result)
    try:
        body = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        raise RolloutFailed(AGENT, "agent /run answered with invalid JSON", result.status) from None
    if not isinstance(body, dict) or not isinstance(body.get("reward"), int | float):
        raise RolloutFailed(AGENT, "agent /run answered without a numeric 'reward'", result.status)
    reported = reported_failure(body)
    if reported is not None:
        raise reported
    return {**body, **row_keys(task)}


def row_keys(task: Task) -> dict[str, Any]:
    """What NeMo Gym sets on every row it writes, over whatever the agent answered."""
    return {TASK_INDEX: task.task_index, ROLLOUT_INDEX: task.rollout_index, AGENT_REF: task.row[AGENT_REF]}
