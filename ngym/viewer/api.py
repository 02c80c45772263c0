"""The JSON API the page reads. Each handler answers a dict; a caller's mistake is an HttpError (4xx) naming
the parameter or row at fault."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request

from ngym.config.errors import ConfigError
from ngym.http.app import HttpError
from ngym.rollouts.keys import TASK_INDEX
from ngym.servers.gym_load import gym_servers
from ngym.viewer import stats
from ngym.viewer.conversation import failure_view, rollout_view, value_at
from ngym.viewer.queries import ordered, parse_table_query, positive_int, row_id, table
from ngym.viewer.rows import STATUS_NAMES, clip, final_text, last_user_text, output_items
from ngym.viewer.state import Viewer
from ngym.viewer.tokens import token_turns

PER_PAGE = 50
MAX_CALLS_SHOWN = 20


def shown_path(path: Path) -> str:
    """A file as the page names it: relative to where ng_viewer was started, when it is under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def number(value: float) -> float | None:
    """JSON has no NaN or infinity: a missing value is null."""
    return value if value == value and not math.isinf(value) else None


def clean(data: dict[str, Any]) -> dict[str, Any]:
    return {key: number(value) if isinstance(value, float) else value for key, value in data.items()}


def only_params(request: Request, allowed: set[str]) -> dict[str, str]:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        names = ", ".join(sorted(allowed)) or "none"
        raise HttpError(400, f"unknown parameter {unknown[0]!r} (parameters: {names})", param=unknown[0])
    return dict(request.query_params)


def choice(params: dict[str, str], name: str, allowed: Sequence[str]) -> str | None:
    value = params.get(name) or None
    if value is not None and value not in allowed:
        raise HttpError(400, f"{name}={value!r}: expected one of {', '.join(allowed)}", param=name)
    return value


def sort_param(params: dict[str, str], allowed: Sequence[str], default: str) -> tuple[str, bool]:
    raw = params.get("sort") or default
    field = raw.lstrip("-+")
    if field not in allowed:
        raise HttpError(400, f"sort: {field!r} is not one of {', '.join(allowed)}", param="sort")
    return field, raw.startswith("-")


def paging(total: int, params: dict[str, str]) -> dict[str, int]:
    page = positive_int("page", params["page"]) if "page" in params else 1
    return {"total": total, "page": page, "pages": max(1, -(-total // PER_PAGE)), "start": (page - 1) * PER_PAGE}


class Api:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer

    def routes(self) -> list[tuple[str, Callable[[Request], Any]]]:
        return [
            ("/api/status", lambda _request: self.viewer.status()),
            ("/api/fields", lambda _request: self.viewer.fields()),
            ("/api/summary", lambda _request: self.viewer.summary()),
            ("/api/rows", self.rows),
            ("/api/rows/{rid}", self.row),
            ("/api/rows/{rid}/value", self.value),
            ("/api/rows/{rid}/tokens", self.tokens),
            ("/api/groups", self.groups),
            ("/api/groups/{task}", self.group),
            ("/api/compare", self.compare),
            ("/api/gym", self.gym),
        ]

    async def gym(self, _request: Request) -> dict[str, Any]:
        """The running gym's servers and each vLLM's load (ngym.servers.gym_load), asked off the event loop."""
        head = self.viewer.config.gym_head
        if head is None:
            raise HttpError(404, "no gym to show: start ng_viewer with +head_server.port=<ng_run's head port>")
        try:
            servers = await asyncio.to_thread(gym_servers, *head)
        except ConfigError as exc:
            raise HttpError(502, str(exc)) from None
        return {"head": f"http://{head[0]}:{head[1]}", "servers": servers}

    def _table_items(self, request: Request) -> list[tuple[str, str]]:
        return list(request.query_params.multi_items())

    def rows(self, request: Request) -> dict[str, Any]:
        query = parse_table_query(self._table_items(request), self.viewer.sources)
        return table(self.viewer.sources, query, self.viewer.cache)

    def row(self, request: Request) -> dict[str, Any]:
        """One rollout (or failure) as a conversation; its query string is the table's, for previous/next."""
        rid = request.path_params["rid"]
        viewer = self.viewer
        index, i = viewer.locate(rid)
        query = parse_table_query(self._table_items(request), viewer.sources)
        row = viewer.read(index, i)
        if index is viewer.sources.rollouts:
            view = rollout_view(row)
            view["has_tokens"] = any("generation_token_ids" in item for item in output_items(row))
        else:
            task = row.get(TASK_INDEX)
            sibling = viewer.sources.rollouts.first_of_task(task) if isinstance(task, int) else None
            task_row = viewer.read(viewer.sources.rollouts, sibling) if sibling is not None else None
            view = failure_view(row, task_row, None if sibling is None else f"r{sibling}")
        view.update(id=rid, line=index.line_numbers[i], file=shown_path(index.path))
        order = ordered(viewer.sources, query, viewer.cache)
        position = order.position(i if rid[0] == "r" else -i - 1)
        view["total"] = len(order)
        view["position"] = None if position is None else position + 1
        view["previous"] = row_id(order.slice(position - 1, position)[0]) if position else None
        after = order.slice(position + 1, position + 2) if position is not None else []
        view["next"] = row_id(after[0]) if after else None
        return view

    def value(self, request: Request) -> dict[str, Any]:
        """A value of a row whole (the conversation cuts long ones)."""
        rid = request.path_params["rid"]
        path = only_params(request, {"path"}).get("path", "")
        index, i = self.viewer.locate(rid)
        try:
            found = value_at(self.viewer.read(index, i), path)
        except KeyError as exc:
            raise HttpError(404, f"{rid} has no {path!r}: nothing at {exc.args[0]!r}", param="path") from None
        text = found if isinstance(found, str) else orjson.dumps(found, option=orjson.OPT_INDENT_2).decode()
        return {"id": rid, "path": path, "text": text}

    def tokens(self, request: Request) -> dict[str, Any]:
        rid = request.path_params["rid"]
        only_params(request, set())
        index, i = self.viewer.locate(rid)
        if index is not self.viewer.sources.rollouts:
            raise HttpError(400, f"{rid} is a failed rollout: it has no tokens", param="id")
        return {"id": rid, **token_turns(self.viewer.read(index, i), self.viewer.config.tokenizer)}

    def groups(self, request: Request) -> dict[str, Any]:
        params = only_params(request, {"sort", "only", "page"})
        field, descending = sort_param(params, stats.GROUP_SORTS, "task")
        only = choice(params, "only", ("zero", "mixed"))
        found = self.viewer.groups()
        chosen = stats.group_rows(found, field, descending, only)
        page = paging(len(chosen), params)
        rollouts = self.viewer.sources.rollouts
        shown = []
        for group in chosen[page["start"] : page["start"] + PER_PAGE]:
            prompt = clip(last_user_text(self.viewer.read(rollouts, group.first)), 200)
            shown.append({**clean(group.as_dict()), "prompt": prompt})
        repeated = [group for group in found.values() if group.n >= 2]
        return {
            **page,
            "rows": shown,
            "tasks": len(found),
            "zero_advantage": sum(group.zero_advantage for group in repeated),
            "mixed": sum(not group.zero_advantage for group in repeated),
            "pass_threshold": self.viewer.config.pass_threshold,
        }

    def group(self, request: Request) -> dict[str, Any]:
        """All rollouts of one task, side by side."""
        raw = request.path_params["task"]
        only_params(request, set())
        rollouts, failures = self.viewer.sources.rollouts, self.viewer.sources.failures
        group = self.viewer.groups().get(int(raw)) if raw.isdigit() else None
        if group is None:
            raise HttpError(404, f"no task {raw!r} in {rollouts.path} (tasks are _ng_task_index values)", param="task")
        members = sorted(
            (i for i in range(group.first, rollouts.rows) if rollouts.task[i] == group.task),
            key=lambda i: rollouts.rollout[i],
        )
        cards = []
        for i in members:
            row = self.viewer.read(rollouts, i)
            calls = [
                f"{item.get('name')}({item.get('arguments', '')})"
                for item in output_items(row)
                if item.get("type") == "function_call"
            ]
            cards.append(
                {
                    "id": f"r{i}",
                    "rollout": rollouts.rollout[i],
                    "status": STATUS_NAMES[rollouts.status[i]],
                    "numbers": {name: number(values[i]) for name, values in rollouts.numbers.items()},
                    "answer": clip(final_text(row), 800),
                    "tool_calls": [clip(call, 200) for call in calls[:MAX_CALLS_SHOWN]],
                }
            )
        failed = [
            {
                "id": f"f{j}",
                "rollout": failures.rollout[j],
                "class": failures.labels["class"].values[failures.labels["class"].codes[j]]
                if "class" in failures.labels
                else None,
            }
            for j in range(failures.rows)
            if failures.task[j] == group.task
        ]
        first = self.viewer.read(rollouts, group.first)
        return {
            **clean(group.as_dict()),
            "input": rollout_view(first)["input"],
            "members": cards,
            "failed": failed,
            "pass_threshold": self.viewer.config.pass_threshold,
        }

    def compare(self, request: Request) -> dict[str, Any]:
        """Mean reward per task in the two files, matched by prompt; delta = b - a."""
        viewer = self.viewer
        other = viewer.other
        if other is None:
            raise HttpError(404, "no second file: start ng_viewer with +compare_jsonl_fpath=<file> to compare two")
        params = only_params(request, {"sort", "only", "page"})
        field, descending = sort_param(params, ("delta", "task", "a", "b"), "delta")
        only = choice(params, "only", ("changed", "both"))
        mine = viewer.sources.rollouts
        pairs = viewer.cache.get(("compare", mine.version, other.version), lambda: stats.compare(mine, other))
        if only is not None:
            pairs_in_both = [pair for pair in pairs if pair.before is not None and pair.after is not None]
            chosen = pairs_in_both if only == "both" else [pair for pair in pairs_in_both if pair.delta != 0]
        else:
            chosen = list(pairs)
        chosen.sort(key=lambda pair: _compare_key(pair, field, descending))
        page = paging(len(chosen), params)
        shown = []
        for pair in chosen[page["start"] : page["start"] + PER_PAGE]:
            source, side = (mine, pair.before) if pair.before is not None else (other, pair.after)
            assert side is not None
            prompt = clip(last_user_text(viewer.read(source, side.first)), 200)
            shown.append(
                {"a": _side(pair.before), "b": _side(pair.after), "delta": number(pair.delta), "prompt": prompt}
            )
        totals = clean(stats.compare_totals(pairs))
        files = {"a": shown_path(mine.path), "b": shown_path(other.path)}
        return {**page, "files": files, "totals": totals, "rows": shown}


def _compare_key(pair: stats.Pair, field: str, descending: bool) -> tuple[float, int]:
    side = pair.before or pair.after
    task = side.task if side is not None else -1
    if field == "delta":
        value = pair.delta
    elif field == "task":
        value = float(task)
    else:
        chosen = pair.before if field == "a" else pair.after
        value = chosen.mean if chosen is not None else math.nan
    return ((-value if descending else value) if value == value else math.inf, task)


def _side(side: stats.Side | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return {"task": side.task, "id": f"r{side.first}", "n": side.n, "mean": number(side.mean)}
