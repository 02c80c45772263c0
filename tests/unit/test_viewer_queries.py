"""The viewer's table (filters, search, sort, pages) and its numbers (histograms, pass@k, groups, comparison)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from ngym.http.app import HttpError
from ngym.rollouts.output import JsonlAppender
from ngym.viewer import stats
from ngym.viewer.build import new_index
from ngym.viewer.queries import Cache, Sources, ordered, parse_table_query, row_id, table
from ngym.viewer.search import search
from testkit.viewer_rows import synthetic_rows, weather_row


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    writer = JsonlAppender(path)
    for row in rows:
        writer.write(row)
    writer.close()


FAILURES = [
    {
        "_ng_task_index": 2,
        "_ng_rollout_index": 4,
        "agent_ref": {"type": "responses_api_agents", "name": "a"},
        "class": "model",
        "status": 502,
        "error": "upstream vLLM answered 502",
    },
    {
        "_ng_task_index": 0,
        "_ng_rollout_index": 4,
        "agent_ref": {"type": "responses_api_agents", "name": "a"},
        "class": "invalid_task",
        "status": 422,
        "error": "input: not a conversation",
    },
]


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    rows = list(synthetic_rows(40))
    rows[21] = weather_row(5, 1, city="Quito", reward=0.0, incomplete=True)
    rows[5]["response"]["output"][-1]["content"][0]["text"] = 'She said "Grüß Gott" to the\nweather'
    write(tmp_path / "out.jsonl", rows)
    write(tmp_path / "out.failures.jsonl", FAILURES)
    result = Sources(
        new_index(tmp_path / "out.jsonl", "rollouts"), new_index(tmp_path / "out.failures.jsonl", "failures")
    )
    result.rollouts.catch_up()
    result.failures.catch_up()
    return result


def query(sources: Sources, **params: str | list[str]) -> dict[str, Any]:
    items = [
        (key, value) for key, values in params.items() for value in ([values] if isinstance(values, str) else values)
    ]
    return table(sources, parse_table_query(items, sources), Cache())


def all_ids(sources: Sources, **params: str | list[str]) -> list[str]:
    return [row["id"] for row in query(sources, per_page="500", **params)["rows"]]


def rows_of(sources: Sources) -> list[dict[str, Any]]:
    return [sources.rollouts.read(i) for i in range(sources.rollouts.rows)]


def test_the_table_pages_through_rollouts_then_failures(sources: Sources) -> None:
    first = query(sources, per_page="15")
    assert first["total"] == 42 and first["pages"] == 3
    assert [row["id"] for row in first["rows"]] == [f"r{i}" for i in range(15)]
    last = query(sources, per_page="15", page="3")
    assert [row["id"] for row in last["rows"]] == [*(f"r{i}" for i in range(30, 40)), "f0", "f1"]
    failure = last["rows"][-1]
    assert failure["status"] == "failed" and failure["labels"]["class"] == "invalid_task"
    assert failure["answer"] == "input: not a conversation"
    row = first["rows"][0]
    assert row["prompt"] == "How's the weather in Paris?" and row["answer"].startswith("The weather in")


def test_filters_combine(sources: Sources) -> None:
    rows = rows_of(sources)
    incomplete = [f"r{i}" for i, row in enumerate(rows) if row["response"]["status"] == "incomplete"]
    assert incomplete and all_ids(sources, status="incomplete") == incomplete
    assert all_ids(sources, status="failed") == ["f0", "f1"]
    assert all_ids(sources, status="failed", **{"is": "class:model"}) == ["f0"]
    zero = [f"r{i}" for i, row in enumerate(rows) if row["reward"] == 0]
    assert all_ids(sources, range="reward:0:0") == zero
    assert all_ids(sources, range="reward::0.5") == zero  # an open bound
    b_agent = [f"r{i}" for i, row in enumerate(rows) if row["agent_ref"]["name"] == "weather_agent_b"]
    assert b_agent and all_ids(sources, agent="weather_agent_b") == b_agent
    paris_zero = [f"r{i}" for i, row in enumerate(rows) if row["reward"] == 0 and row["expected_city"] == "Paris"]
    assert all_ids(sources, range="reward:0:0", **{"is": "expected_city:Paris"}) == paris_zero
    assert all_ids(sources, range="task:2:3") == [f"r{i}" for i in range(8, 16)] + ["f0"]


def test_search_finds_text_as_json_writes_it(sources: Sources) -> None:
    assert all_ids(sources, q='"grüß gott"') == ["r5"]  # quotes escaped in the line, case folded
    assert all_ids(sources, q="the\nweather") == ["r5"]
    assert all_ids(sources, q="GRÜSS") == []
    assert all_ids(sources, q="vllm answered") == ["f0"]
    tokyo = [f"r{i}" for i, row in enumerate(rows_of(sources)) if "Tokyo" in orjson.dumps(row).decode()]
    assert all_ids(sources, q="tokyo") == tokyo


def test_search_reads_only_indexed_rows(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = list(synthetic_rows(4))
    write(path, rows)
    with path.open("ab") as handle:
        handle.write(b'{"partial": "Tokyo')
    index = new_index(path, "rollouts")
    index.catch_up()
    assert list(search(index, "tokyo")) == [i for i, row in enumerate(rows) if b"Tokyo" in orjson.dumps(row)]


def test_sorting_puts_rows_without_a_value_last(sources: Sources) -> None:
    rows = rows_of(sources)
    ids = all_ids(sources, sort="-reward")
    rewards = [rows[int(rid[1:])]["reward"] for rid in ids if rid[0] == "r"]
    assert rewards == sorted(rewards, reverse=True)
    assert ids[-2:] == ["f0", "f1"]  # failures have no reward
    ascending = all_ids(sources, sort="reward")
    assert ascending[-2:] == ["f0", "f1"] and [rows[int(r[1:])]["reward"] for r in ascending[:3]] == [0.0] * 3
    by_task = all_ids(sources, sort="-task")
    assert by_task[:5] == ["r36", "r37", "r38", "r39", "r32"]  # ties keep file order
    assert by_task.index("f0") == by_task.index("r11") + 1  # task 2's failure after its rollouts
    assert all_ids(sources, sort="http_status")[:2] == ["f1", "f0"]  # a failures-only field: they lead


def test_a_rows_place_in_the_order(sources: Sources) -> None:
    order = ordered(sources, parse_table_query([("sort", "-reward")], sources), Cache())
    ids = [row_id(encoded) for encoded in order.slice(0, len(order))]
    assert order.position(-1) == ids.index("f0")
    plain = ordered(sources, parse_table_query([("status", "failed")], sources), Cache())
    assert plain.position(-2) == 1 and plain.position(3) is None


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        ([("sort", "nope")], "sort", "no numeric field 'nope'"),
        ([("range", "reward:a:1")], "range", "'a' is not a number"),
        ([("range", "reward")], "range", "expected FIELD:LOW:HIGH"),
        ([("range", "unknown:0:1")], "range", "no numeric field 'unknown'"),
        ([("is", "unknown:x")], "is", "no field 'unknown'"),
        ([("status", "done")], "status", "not one of completed, incomplete, failed, error"),
        ([("page", "0")], "page", "must be at least 1"),
        ([("per_page", "5000")], "per_page", "at most 500"),
        ([("color", "red")], "color", "unknown parameter 'color'"),
    ],
)
def test_a_bad_query_names_its_parameter(
    sources: Sources, params: list[tuple[str, str]], param: str, message: str
) -> None:
    with pytest.raises(HttpError) as caught:
        parse_table_query(params, sources)
    assert caught.value.status == 400 and caught.value.param == param and message in caught.value.message


def test_histograms_bin_whole_numbers_one_per_value() -> None:
    turns = stats.histogram([1.0, 2.0, 2.0, 5.0, math.nan])
    assert [(b["low"], b["count"]) for b in turns["bins"]] == [(1.0, 1), (2.0, 2), (3.0, 0), (4.0, 0), (5.0, 1)]
    assert turns["count"] == 4 and turns["mean"] == 2.5
    spread = stats.histogram([0.05 * n for n in range(100)], bins=10)
    assert len(spread["bins"]) == 10 and sum(b["count"] for b in spread["bins"]) == 100
    assert stats.histogram([math.nan]) == {"count": 0, "bins": []}


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    assert stats.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert stats.pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert stats.pass_at_k(4, 1, 4) == 1.0
    assert stats.pass_at_k(4, 0, 4) == 0.0
    assert stats.pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))


def test_groups_flag_zero_advantage_and_pass_at_k(tmp_path: Path) -> None:
    rows = [weather_row(0, r, city="Oslo", reward=1.0) for r in range(4)]
    rows += [weather_row(1, r, city="Lima", reward=float(r == 2)) for r in range(4)]
    rows += [weather_row(2, r, city="Perth", reward=0.0) for r in range(3)]
    rows.append(weather_row(3, 0, city="Cairo", reward=1.0))
    write(tmp_path / "out.jsonl", rows)
    index = new_index(tmp_path / "out.jsonl", "rollouts")
    index.catch_up()
    found = stats.groups(index, threshold=1.0)
    assert [found[t].zero_advantage for t in range(4)] == [True, False, True, False]
    assert found[1].mean == 0.25 and found[1].spread == pytest.approx(math.sqrt(0.1875)) and found[1].passes == 1
    table_ = stats.pass_at_k_table([group for group in found.values() if group.n >= 2])
    assert [row["k"] for row in table_] == [1, 2, 4]
    assert table_[0]["pass_at_k"] == pytest.approx((1 + 0.25 + 0) / 3)
    assert table_[2] == {"k": 4, "pass_at_k": pytest.approx(1.0), "tasks": 2}
    order = stats.group_rows(found, "spread", True, "mixed")
    assert [group.task for group in order] == [1]


def test_two_files_are_compared_on_the_same_prompts(tmp_path: Path) -> None:
    before = [
        weather_row(t, r, city=city, reward=float(t != 1))
        for t, city in enumerate(("Oslo", "Lima", "Perth"))
        for r in range(2)
    ]
    # The second run numbered its tasks differently, left Perth out and added Cairo.
    after = [
        weather_row(t, r, city=city, reward=float(t == 0))
        for t, city in enumerate(("Lima", "Oslo", "Cairo"))
        for r in range(2)
    ]
    write(tmp_path / "a.jsonl", before)
    write(tmp_path / "b.jsonl", after)
    a, b = new_index(tmp_path / "a.jsonl", "rollouts"), new_index(tmp_path / "b.jsonl", "rollouts")
    a.catch_up()
    b.catch_up()
    pairs = {(p.before.task if p.before else None, p.after.task if p.after else None): p for p in stats.compare(a, b)}
    assert set(pairs) == {(0, 1), (1, 0), (2, None), (None, 2)}
    assert pairs[(0, 1)].delta == -1.0 and pairs[(1, 0)].delta == 1.0
    totals = stats.compare_totals(list(pairs.values()))
    assert totals == {
        "tasks_in_both": 2,
        "only_before": 1,
        "only_after": 1,
        "improved": 1,
        "regressed": 1,
        "unchanged": 0,
        "mean_before": 0.5,
        "mean_after": 0.5,
    }


def test_summary_counts_the_run(sources: Sources, tmp_path: Path) -> None:
    (tmp_path / "out.summary.json").write_bytes(orjson.dumps({"expected": 44, "finished": 40, "failed": 2}))
    data = stats.summary(sources.rollouts, sources.failures, tmp_path / "out.summary.json", 1.0)
    rows = rows_of(sources)
    assert data["expected"] == 44 and data["finished"] == 40 and data["failed"] == 2
    assert data["failed_by_class"] == {"model": 1, "invalid_task": 1}
    assert data["incomplete"] == sum(row["response"]["status"] == "incomplete" for row in rows)
    assert data["mean_reward"] == pytest.approx(sum(row["reward"] for row in rows) / 40)
    assert data["tasks"] == 10 and data["pass_at_k"][0]["k"] == 1
    assert sum(b["count"] for b in data["histograms"]["turns"]["bins"]) == 40
    assert stats.summary(sources.rollouts, sources.failures, tmp_path / "none.json", 1.0)["expected"] is None
