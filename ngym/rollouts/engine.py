"""Run rollouts through their agents' /run, a bounded number at once, and hand back each as it ends.

The one loop under both ng_collect_rollouts (which writes files) and the Python API (which yields to a
trainer). Every rollout ends as an Outcome: its scored row, or its failure with a class. A stop (Ctrl-C, too
many failures in a row, the caller) is seen at once, also while waiting for a free slot; the rollouts in
flight are then cancelled and the rest never start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ngym.http.client import HttpClient, UpstreamError
from ngym.placement.routing import ReplicaRouter
from ngym.rollouts.failures import AGENT, RolloutFailed, from_agent_answer, from_upstream_error
from ngym.rollouts.keys import AGENT_REF, ROLLOUT_INDEX, TASK_INDEX
from ngym.rollouts.tasks import Task


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
    for router in routers.values():
        router.start()
    slots = asyncio.Semaphore(max_in_flight)
    ended: asyncio.Queue[Outcome] = asyncio.Queue()
    running: set[asyncio.Task[None]] = set()
    stopper = asyncio.ensure_future(stop.wait())

    async def run_one(task: Task) -> None:
        # A rollout holds its slot until its outcome is taken, so a slow consumer holds back new rollouts
        # instead of letting finished ones pile up.
        try:
            outcome = await run_rollout(http, routers[task.agent], task)
        except asyncio.CancelledError:
            slots.release()
            raise
        ended.put_nowait(outcome)

    async def start_all() -> None:
        for task in tasks:
            if not await _free_slot(slots, stopper):
                return
            job = asyncio.create_task(run_one(task))
            running.add(job)
            job.add_done_callback(running.discard)

    starter = asyncio.create_task(start_all())
    try:
        while True:
            if ended.empty():
                if starter.done() and not running:
                    break
                getter = asyncio.ensure_future(ended.get())
                waits = {getter, stopper} | ({starter} if not starter.done() else set())
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    if stop.is_set():
                        break
                    continue
                outcome = getter.result()
            else:
                outcome = ended.get_nowait()
            slots.release()
            yield outcome
            if stop.is_set():
                break
        if starter.done():
            starter.result()  # an error while reading the tasks is the caller's to see
    finally:
        stopper.cancel()
        starter.cancel()
        for job in list(running):
            job.cancel()
        await asyncio.gather(starter, *running, return_exceptions=True)
        for router in routers.values():
            await router.stop()


async def run_rollout(http: HttpClient, agent: ReplicaRouter, task: Task) -> Outcome:
    """One rollout on a replica of its agent; any exception a request can raise ends as a classified failure,
    never escapes. A replica that cannot be reached never saw the rollout: it leaves rotation and the rollout
    goes to the next one at once."""
    for _ in agent.replicas:
        with agent.hold() as replica:
            try:
                return Outcome(task, await _scored_row(http, replica.base_url, task))
            except UpstreamError as exc:
                agent.failed(replica, exc)  # out of rotation if unreachable and not the only replica
                if replica.healthy or not any(other.healthy for other in agent.replicas):
                    return Outcome(task, None, from_upstream_error(exc))
            except RolloutFailed as failure:
                return Outcome(task, None, failure)
            except Exception as exc:  # every rollout ends counted: finished, or failed with its class and reason
                return Outcome(task, None, RolloutFailed(AGENT, f"{type(exc).__name__}: {exc}"))
    return Outcome(task, None, RolloutFailed(AGENT, f"no replica of agent {task.agent!r} could be reached"))


async def _scored_row(http: HttpClient, agent_url: str, task: Task) -> dict[str, Any]:
    result = await http.post_json(agent_url + "/run", task.row)
    if not result.ok:
        raise from_agent_answer(result)
    try:
        body = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        raise RolloutFailed(AGENT, "agent /run answered with invalid JSON", result.status) from None
    if not isinstance(body, dict) or not isinstance(body.get("reward"), int | float):
        raise RolloutFailed(AGENT, "agent /run answered without a numeric 'reward'", result.status)
    return {**body, **row_keys(task)}


def row_keys(task: Task) -> dict[str, Any]:
    """What NeMo Gym sets on every row it writes, over whatever the agent answered."""
    return {TASK_INDEX: task.task_index, ROLLOUT_INDEX: task.rollout_index, AGENT_REF: task.row[AGENT_REF]}


async def _free_slot(slots: asyncio.Semaphore, stopper: asyncio.Future[Any]) -> bool:
    """Wait for a free slot, or for a stop (seen at once, not when some rollout finishes): True for a slot."""
    if stopper.done():
        return False
    if slots.locked():
        acquire = asyncio.ensure_future(slots.acquire())
        await asyncio.wait([acquire, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
            return False
    else:
        await slots.acquire()
    if stopper.done():
        slots.release()
        return False
    return True
