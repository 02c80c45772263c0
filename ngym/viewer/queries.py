"""The rollout table: filters, sort and pages over the rollouts file and its failures file together.

A row is `r<i>` (the i-th row of the rollouts file) or `f<j>` (of the failures file). The query string is the
page's URL, so a view can be shared: `sort=-reward`, `status=incomplete`, `agent=NAME`, `range=FIELD:LO:HI`
(either bound may be empty), `is=FIELD:VALUE`, `q=TEXT`, `page`, `per_page`.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ngym.http.app import HttpError
from ngym.viewer.index import RowIndex
from ngym.viewer.rows import STATUS_NAMES, clip, final_text, last_user_text
from ngym.viewer.search import MAX_QUERY_CHARS, search

INF = math.inf
POSITIONS = ("task", "rollout")  # sortable like numbers; -1 (absent) sorts last
MAX_PER_PAGE = 500
TABLE_PARAMS = frozenset({"sort", "status", "agent", "range", "is", "q", "page", "per_page"})
T = TypeVar("T")


@dataclass(frozen=True)
class Sources:
    rollouts: RowIndex
    failures: RowIndex

    @property
    def version(self) -> tuple[Any, ...]:
        return self.rollouts.version, self.failures.version

    def numeric_fields(self) -> list[str]:
        names = [*self.rollouts.numbers, *(n for n in self.failures.numbers if n not in self.rollouts.numbers)]
        return [*names, *POSITIONS]

    def label_fields(self) -> list[str]:
        return [*self.rollouts.labels, *(n for n in self.failures.labels if n not in self.rollouts.labels)]


@dataclass(frozen=True)
class Filters:
    q: str = ""
    status: tuple[int, ...] = ()
    agents: tuple[str, ...] = ()
    ranges: tuple[tuple[str, float, float], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TableQuery:
    filters: Filters
    sort: str | None = None
    descending: bool = False
    page: int = 1
    per_page: int = 50


class Cache:
    """The last few answers, keyed on what they depend on (the indexes' versions among it)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = compute()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


def positive_int(name: str, raw: str, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"{name}={raw!r}: not a whole number", param=name) from None
    if value < 1 or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise HttpError(400, f"{name}={value}: must be at least 1{bound}", param=name)
    return value


def _bound(raw: str, default: float, param: str) -> float:
    if raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, f"range: {raw!r} is not a number ({param})", param="range") from None
    if math.isnan(value):
        raise HttpError(400, f"range: NaN is not a bound ({param})", param="range")
    return value


def parse_filters(items: Sequence[tuple[str, str]], sources: Sources) -> Filters:
    q, statuses, agents = "", [], []
    ranges: list[tuple[str, float, float]] = []
    labels: list[tuple[str, str]] = []
    numeric, label_fields = set(sources.numeric_fields()), set(sources.label_fields())
    text_fields = sources.rollouts.text_fields | sources.failures.text_fields
    for key, value in items:
        if key == "q":
            if len(value) > MAX_QUERY_CHARS:
                raise HttpError(400, f"q: at most {MAX_QUERY_CHARS} characters", param="q")
            q = value
        elif key == "status":
            if value not in STATUS_NAMES:
                raise HttpError(400, f"status={value!r}: not one of {', '.join(STATUS_NAMES)}", param="status")
            statuses.append(STATUS_NAMES.index(value))
        elif key == "agent":
            agents.append(value)
        elif key == "range":
            field, sep, bounds = value.partition(":")
            low, sep2, high = bounds.partition(":")
            if not (sep and sep2):
                raise HttpError(400, f"range={value!r}: expected FIELD:LOW:HIGH (a bound may be empty)", param="range")
            if field not in numeric:
                known = ", ".join(sorted(numeric))
                raise HttpError(400, f"range: no numeric field {field!r} (fields: {known})", param="range")
            ranges.append((field, _bound(low, -INF, value), _bound(high, INF, value)))
        elif key == "is":
            field, sep, wanted = value.partition(":")
            if not sep:
                raise HttpError(400, f"is={value!r}: expected FIELD:VALUE", param="is")
            if field not in label_fields:
                if field in text_fields:
                    raise HttpError(
                        400,
                        f"is: {field!r} has too many distinct values to filter on; search for the text instead (q=...)",
                        param="is",
                    )
                known = ", ".join(sorted(label_fields)) or "none"
                raise HttpError(400, f"is: no field {field!r} to filter on (fields: {known})", param="is")
            labels.append((field, wanted))
    return Filters(q, tuple(dict.fromkeys(statuses)), tuple(dict.fromkeys(agents)), tuple(ranges), tuple(labels))


def parse_table_query(items: Sequence[tuple[str, str]], sources: Sources) -> TableQuery:
    unknown = sorted({key for key, _ in items} - TABLE_PARAMS)
    if unknown:
        raise HttpError(
            400, f"unknown parameter {unknown[0]!r} (parameters: {', '.join(sorted(TABLE_PARAMS))})", param=unknown[0]
        )
    values = dict(items)
    sort, descending = values.get("sort") or None, False
    if sort is not None:
        descending = sort.startswith("-")
        sort = sort.lstrip("-+")
        if sort not in sources.numeric_fields():
            known = ", ".join(sources.numeric_fields())
            raise HttpError(400, f"sort: no numeric field {sort!r} (fields: {known})", param="sort")
    page = positive_int("page", values["page"]) if "page" in values else 1
    per_page = positive_int("per_page", values["per_page"], MAX_PER_PAGE) if "per_page" in values else 50
    return TableQuery(parse_filters(items, sources), sort, descending, page, per_page)


def column(index: RowIndex, field: str) -> Sequence[float] | None:
    if field == "task":
        return index.task
    if field == "rollout":
        return index.rollout
    return index.numbers.get(field)


def select(index: RowIndex, filters: Filters, cache: Cache) -> Sequence[int]:
    """Ids of the rows of one file that pass every filter, in file order."""
    ids: Sequence[int] = range(index.rows)
    if filters.q:
        ids = cache.get(("search", index.path, index.version, filters.q), lambda: search(index, filters.q))
    if filters.status:
        allowed, status = set(filters.status), index.status
        ids = [i for i in ids if status[i] in allowed]
    if filters.agents:
        agent_codes = {code for code, name in enumerate(index.agents) if name in filters.agents}
        agent = index.agent
        ids = [i for i in ids if agent[i] in agent_codes]
    for field, low, high in filters.ranges:
        values = column(index, field)
        if values is None:
            return []
        if field in POSITIONS:  # -1: the row has none
            ids = [i for i in ids if values[i] >= 0 and low <= values[i] <= high]
        else:
            ids = [i for i in ids if low <= values[i] <= high]
    for field, wanted in filters.labels:
        column_of_labels = index.labels.get(field)
        code = column_of_labels.lookup.get(wanted) if column_of_labels is not None else None
        if column_of_labels is None or code is None:
            return []
        codes = column_of_labels.codes
        ids = [i for i in ids if codes[i] == code]
    return ids


def sort_keys(index: RowIndex, field: str, descending: bool) -> list[float] | None:
    """One key per row: ascending order of keys is the wanted order; rows without a value last."""
    values = column(index, field)
    if values is None:
        return None
    sign = -1.0 if descending else 1.0
    if field in POSITIONS:
        return [value * sign if value >= 0 else INF for value in values]
    return [value * sign if value == value else INF for value in values]


class Ordered:
    """The table's rows in order: rollouts as i, failures as -(j + 1)."""

    def __init__(self, rollouts: Sequence[int], failures: Sequence[int], merged: array[int] | None = None) -> None:
        self.rollouts, self.failures, self.merged = rollouts, failures, merged

    def __len__(self) -> int:
        return len(self.merged) if self.merged is not None else len(self.rollouts) + len(self.failures)

    def position(self, encoded: int) -> int | None:
        """Where a row is in this order (None when the filters leave it out)."""
        try:
            if self.merged is not None:
                return self.merged.index(encoded)
            if encoded >= 0:
                return _position(self.rollouts, encoded)
            return len(self.rollouts) + _position(self.failures, -encoded - 1)
        except ValueError:
            return None

    def slice(self, start: int, stop: int) -> list[int]:
        if self.merged is not None:
            return list(self.merged[start:stop])
        split = len(self.rollouts)
        ids = list(self.rollouts[start : min(stop, split)]) if start < split else []
        if stop > split:
            ids.extend(-(j + 1) for j in self.failures[max(0, start - split) : stop - split])
        return ids


def _position(ids: Sequence[int], wanted: int) -> int:
    """Index of `wanted` in ascending ids (a range, a list or an array); ValueError if absent."""
    found = bisect_right(ids, wanted) - 1
    if found < 0 or ids[found] != wanted:
        raise ValueError(wanted)
    return found


def ordered(sources: Sources, query: TableQuery, cache: Cache) -> Ordered:
    def compute() -> Ordered:
        rollouts = select(sources.rollouts, query.filters, cache)
        failures = select(sources.failures, query.filters, cache)
        if query.sort is None:
            return Ordered(rollouts, failures)
        return Ordered(rollouts, failures, _merge_sorted(sources, rollouts, failures, query.sort, query.descending))

    return cache.get(("table", sources.version, query.filters, query.sort, query.descending), compute)


def _merge_sorted(
    sources: Sources, rollouts: Sequence[int], failures: Sequence[int], field: str, descending: bool
) -> array[int]:
    r_keys = sort_keys(sources.rollouts, field, descending)
    r_sorted = sorted(rollouts, key=r_keys.__getitem__) if r_keys is not None else list(rollouts)
    merged: array[int] = array("q")
    if not failures:
        merged.extend(r_sorted)
        return merged
    f_keys = sort_keys(sources.failures, field, descending)
    f_sorted = sorted(failures, key=f_keys.__getitem__) if f_keys is not None else list(failures)
    in_order = [r_keys[i] for i in r_sorted] if r_keys is not None else [INF] * len(r_sorted)
    taken = 0
    for j in f_sorted:
        position = bisect_right(in_order, f_keys[j] if f_keys is not None else INF)  # rollouts first on a tie
        merged.extend(r_sorted[taken:position])
        merged.append(-(j + 1))
        taken = position
    merged.extend(r_sorted[taken:])
    return merged


def row_id(encoded: int) -> str:
    return f"r{encoded}" if encoded >= 0 else f"f{-encoded - 1}"


def summarize_row(sources: Sources, encoded: int) -> dict[str, Any]:
    """One line of the table: the index's facts plus a preview read from the row itself."""
    failure = encoded < 0
    index = sources.failures if failure else sources.rollouts
    i = -encoded - 1 if failure else encoded
    row = index.read(i)
    numbers = {name: values[i] for name, values in index.numbers.items()}
    labels = {name: labels.values[labels.codes[i]] for name, labels in index.labels.items() if labels.codes[i]}
    preview = clip(str(row.get("error") or ""), 240) if failure else clip(final_text(row), 240)
    return {
        "id": row_id(encoded),
        "line": index.line_numbers[i],
        "task": index.task[i] if index.task[i] >= 0 else None,
        "rollout": index.rollout[i] if index.rollout[i] >= 0 else None,
        "agent": index.agents[index.agent[i]],
        "status": STATUS_NAMES[index.status[i]],
        "numbers": numbers,
        "labels": labels,
        "prompt": "" if failure else clip(last_user_text(row), 160),
        "answer": preview,
    }


def table(sources: Sources, query: TableQuery, cache: Cache) -> dict[str, Any]:
    rows = ordered(sources, query, cache)
    total = len(rows)
    pages = max(1, -(-total // query.per_page))
    start = (query.page - 1) * query.per_page
    return {
        "total": total,
        "page": query.page,
        "pages": pages,
        "per_page": query.per_page,
        "columns": [name for name in sources.numeric_fields() if name not in POSITIONS],
        "rows": [summarize_row(sources, encoded) for encoded in rows.slice(start, start + query.per_page)],
    }
