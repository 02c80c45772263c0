"""Task rows from a JSONL file, expanded into rollouts as NeMo Gym's ng_collect_rollouts does, streamed.

The rules (NeMo Gym's `_preprocess_rows_from_config`): +limit keeps the first N rows; +prompt_config builds
each row's input; `agent_ref.name` picks the agent, +agent_name stands in for rows without one; the
+responses_create_params override is merged in; `_ng_task_index` is the row's own when it has one, else
identical lines share one index and each new line takes the next; `_ng_rollout_index` counts the rollouts of a
task from 0 (across identical lines too); each row's rollouts come in a row (abc -> aabbcc); with
+num_repeats_add_seed, `metadata.extra_body` (a JSON string) gets `seed` = the rollout index.

The file is read twice, never held: `check_tasks` validates every row used, then `iter_tasks` streams them.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ngym.config.errors import ConfigError
from ngym.rollouts.keys import (
    AGENT_REF,
    AGENT_TYPE,
    PARAMS,
    ROLLOUT_INDEX,
    TASK_INDEX,
    RolloutKey,
    agent_ref,
    is_index,
)
from ngym.rollouts.prompt import Prompt

DEFAULT_REPEATS = "_default"  # the fallback entry of a per-agent +num_repeats mapping
SHOWN_LINES = 10  # line numbers listed in one error


@dataclass(frozen=True)
class TaskSource:
    """Where the rows come from: a JSONL file (`path`), or rows in memory (`rows`: the Python API), and how
    they become rollouts. Errors name `path:line`, or `rows:N` (1-based) for rows in memory."""

    path: Path | None
    limit: int | None = None  # None or 0: every row (NeMo Gym treats 0 as no limit)
    agent_name: str | None = None
    num_repeats: int | Mapping[str, int] = 1
    add_seed: bool = False
    params_override: Mapping[str, Any] | None = None
    prompt: Prompt | None = None
    rows: Sequence[Mapping[str, Any]] | None = None

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "rows"

    def repeats_for(self, agent: str) -> int | None:
        if isinstance(self.num_repeats, int):
            return self.num_repeats
        return self.num_repeats.get(agent, self.num_repeats.get(DEFAULT_REPEATS))


@dataclass(frozen=True, slots=True)
class Task:
    task_index: int
    rollout_index: int
    agent: str
    line_no: int
    row: dict[str, Any]  # what the agent's /run receives, with the index keys and agent_ref

    @property
    def key(self) -> RolloutKey:
        return self.task_index, self.rollout_index


@dataclass(frozen=True)
class AgentUse:
    first_line: int
    from_row: bool  # named by the row's agent_ref (else by +agent_name)


@dataclass
class TaskCheck:
    rollouts: int = 0
    agents: dict[str, AgentUse] = field(default_factory=dict)
    already_done: int = 0  # rollouts of this run found in the `done` set given to check_tasks


def check_tasks(source: TaskSource, done: set[RolloutKey] | frozenset[RolloutKey] = frozenset()) -> TaskCheck:
    """Validate every row the run uses and count its rollouts; rows without an agent and agents without a
    +num_repeats entry are reported together, each with its lines."""
    check = TaskCheck()
    no_agent: list[int] = []
    no_repeats: dict[str, int] = {}
    indexer = _Indexer()
    for row in _prepared_rows(source):
        if row.agent is None:
            no_agent.append(row.line_no)
            continue
        check.agents.setdefault(row.agent, AgentUse(row.line_no, row.agent_from_row))
        repeats = source.repeats_for(row.agent)
        if repeats is None:
            no_repeats.setdefault(row.agent, row.line_no)
            continue
        if source.add_seed:
            _with_seed(row.row[PARAMS], 0, row.where)
        task = indexer.task(row)
        for rollout in indexer.rollouts(task, repeats):
            check.rollouts += 1
            check.already_done += (task, rollout) in done
    if no_agent:
        raise ConfigError(
            f"{source.name}: no agent for the rows on {_lines(no_agent)}: give +agent_name=... or an "
            f"`agent_ref: {{type: {AGENT_TYPE}, name: ...}}` in each row"
        )
    if no_repeats:
        assert not isinstance(source.num_repeats, int)
        listed = ", ".join(f"{name!r} (first on line {line})" for name, line in sorted(no_repeats.items()))
        raise ConfigError(
            f"+num_repeats has no entry for the agents {listed} and no {DEFAULT_REPEATS!r} entry; "
            f"its entries: {', '.join(sorted(source.num_repeats))}"
        )
    if check.rollouts == 0:
        raise ConfigError(f"{source.name}: no task rows")
    return check


def unused_repeat_entries(source: TaskSource, check: TaskCheck) -> list[str]:
    """Per-agent +num_repeats entries for agents no row uses (a typo, likely)."""
    if isinstance(source.num_repeats, int):
        return []
    return sorted(set(source.num_repeats) - set(check.agents) - {DEFAULT_REPEATS})


def iter_tasks(source: TaskSource) -> Iterator[Task]:
    """Every rollout of the run in NeMo Gym's order, with NeMo Gym's indices (rows checked by check_tasks)."""
    indexer = _Indexer()
    for row in _prepared_rows(source):
        repeats = source.repeats_for(row.agent) if row.agent is not None else None
        if row.agent is None or repeats is None:
            raise ConfigError(f"{row.where}: the row has no agent or no +num_repeats entry")
        task = indexer.task(row)
        for rollout in indexer.rollouts(task, repeats):
            full = {**row.row, TASK_INDEX: task, ROLLOUT_INDEX: rollout}
            if source.add_seed:
                full[PARAMS] = _with_seed(full[PARAMS], rollout, row.where)
            yield Task(task, rollout, row.agent, row.line_no, full)


@dataclass(frozen=True, slots=True)
class _Row:
    line_no: int
    where: str
    raw: bytes
    agent: str | None
    agent_from_row: bool
    row: dict[str, Any]


class _Indexer:
    """NeMo Gym's index assignment; identical lines are told apart by a 16-byte digest, not kept whole."""

    def __init__(self) -> None:
        self.task_of_line: dict[bytes, int] = {}
        self.next_rollout: Counter[int] = Counter()

    def task(self, row: _Row) -> int:
        own = row.row.get(TASK_INDEX)
        if own is not None:
            return int(own)
        digest = hashlib.blake2b(row.raw, digest_size=16).digest()
        return self.task_of_line.setdefault(digest, len(self.task_of_line))

    def rollouts(self, task: int, repeats: int) -> range:
        start = self.next_rollout[task]
        self.next_rollout[task] = start + repeats
        return range(start, start + repeats)


def _prepared_rows(source: TaskSource) -> Iterator[_Row]:
    """Each used row, prepared up to its indices: prompt filled, agent_ref set, params merged."""
    rows = _read_rows(source.path, source.limit or None) if source.rows is None else _given_rows(source)
    for line_no, raw, row in rows:
        where = f"{source.name}:{line_no}"
        if source.prompt is not None:
            row = source.prompt.apply(row, where)
        if not isinstance(row.get(PARAMS), dict):
            raise ConfigError(f"{where}: the row has no '{PARAMS}' object")
        agent = _agent_of(row, where)
        from_row = agent is not None
        if agent is None and source.agent_name:
            agent = source.agent_name
            row = {**row, AGENT_REF: agent_ref(agent)}
        if source.params_override:
            row = {**row, PARAMS: {**row[PARAMS], **source.params_override}}
        task = row.get(TASK_INDEX)
        if task is not None and not is_index(task):
            raise ConfigError(f"{where}: {TASK_INDEX} must be a whole number, got {task!r}")
        yield _Row(line_no, where, raw, agent, from_row, row)


def _agent_of(row: dict[str, Any], where: str) -> str | None:
    ref = row.get(AGENT_REF)
    if ref is None:
        return None
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not ref["name"]:
        raise ConfigError(f"{where}: {AGENT_REF} must be an object with a `name` (the agent), got {ref!r}")
    kind = ref.get("type")
    if kind is not None and kind != AGENT_TYPE:
        raise ConfigError(f"{where}: {AGENT_REF}.type must be {AGENT_TYPE!r}, got {kind!r}")
    return str(ref["name"])


def _with_seed(params: dict[str, Any], rollout: int, where: str) -> dict[str, Any]:
    metadata = params.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"{where}: {PARAMS}.metadata must be an object to take a seed, got {metadata!r}")
    raw = metadata.get("extra_body", "{}")
    try:
        extra = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        extra = None
    if not isinstance(extra, dict):
        raise ConfigError(
            f"{where}: {PARAMS}.metadata.extra_body must be a JSON object in a string to take a seed, got {raw!r}"
        )
    extra["seed"] = rollout
    # json.dumps, as NeMo Gym writes it: the same bytes in both tools' rows.
    return {**params, "metadata": {**metadata, "extra_body": json.dumps(extra)}}


def _given_rows(source: TaskSource) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """Rows in memory, as _read_rows gives a file's: identical rows are told apart by their JSON bytes."""
    assert source.rows is not None
    limit = source.limit or None
    for number, row in enumerate(source.rows[:limit] if limit else source.rows, start=1):
        if not isinstance(row, Mapping):
            raise ConfigError(f"rows:{number}: a row must be a dict, got {type(row).__name__}")
        yield number, orjson.dumps(row, option=orjson.OPT_SORT_KEYS) + b"\n", dict(row)


def _read_rows(path: Path | None, limit: int | None) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """(line number, the line as NeMo Gym keys identical rows by, the row) of the first `limit` rows."""
    if path is None or not path.is_file():
        raise ConfigError(f"input file not found: {path}")
    used = 0
    with path.open("rb") as lines:
        for line_no, line in enumerate(lines, start=1):
            if limit is not None and used >= limit:
                return
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{line_no}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{line_no}: a row must be a JSON object, got {type(row).__name__}")
            used += 1
            # NeMo Gym reads in text mode: a CRLF line is the same row as its LF twin.
            yield line_no, line[:-2] + b"\n" if line.endswith(b"\r\n") else line, row


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:SHOWN_LINES])
    more = f" and {len(numbers) - SHOWN_LINES} more" if len(numbers) > SHOWN_LINES else ""
    return f"line{'s' if len(numbers) > 1 else ''} {shown}{more}"


def check_run(source: TaskSource, agents: Collection[str], done: set[RolloutKey]) -> TaskCheck:
    """Every row checked, and every agent the rows name running, before anything starts."""
    check = check_tasks(source, done)
    known = ", ".join(sorted(agents)) or "none"
    for name, use in check.agents.items():
        if name not in agents:
            named_by = f"its {AGENT_REF} names" if use.from_row else "+agent_name gives it"
            raise ConfigError(
                f"{source.name}:{use.first_line}: {named_by} the agent {name!r}, which is not running in "
                f"ng_run (its agents: {known})"
            )
    return check
