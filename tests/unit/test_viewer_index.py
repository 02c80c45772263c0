"""The viewer's index: one pass over a rollout file, rows read back by offset, following a file being written."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from ngym.rollouts.output import JsonlAppender
from ngym.viewer.build import build, executor, new_index, pieces
from ngym.viewer.index import MAX_LABEL_VALUES, RowIndex
from ngym.viewer.rows import BUILTIN_NUMBERS, COMPLETED, FAILED, INCOMPLETE, rollout_facts
from testkit.viewer_rows import synthetic_rows, weather_row


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    writer = JsonlAppender(path)  # what ng_collect_rollouts writes with
    for row in rows:
        writer.write(row)
    writer.close()


def indexed(path: Path, kind: str = "rollouts") -> RowIndex:
    index = new_index(path, kind)
    index.catch_up()
    return index


def test_rows_are_indexed_in_one_pass_and_read_back_by_offset(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = list(synthetic_rows(60, tokens=True))
    write(path, rows)
    index = indexed(path)
    assert index.rows == 60 and index.bad_count == 0 and not index.indexing
    for i in (0, 17, 59):
        assert index.read(i) == rows[i]
        assert (index.task[i], index.rollout[i]) == (rows[i]["_ng_task_index"], rows[i]["_ng_rollout_index"])
        assert index.numbers["reward"][i] == rows[i]["reward"]
        assert index.line_numbers[i] == i + 1
    assert index.status[49] == INCOMPLETE and index.status[0] == COMPLETED
    assert index.numbers["turns"][0] == 2 and index.numbers["turns"][49] == 1
    assert index.numbers["tool_calls"][0] == 1
    generated = sum(len(item.get("generation_token_ids", [])) for item in rows[0]["response"]["output"])
    assert index.numbers["output_tokens"][0] == generated  # every turn's IDs, not the last call's usage
    assert index.agents[index.agent[36]] == "weather_agent_b"
    reasons = index.labels["reason"]
    assert reasons.values[reasons.codes[0]] == rows[0]["reason"]
    assert "expected_city" in index.labels and "called_city" in index.labels


def test_a_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = list(synthetic_rows(3))
    write(path, rows[:2])
    line = orjson.dumps(rows[2]) + b"\n"
    with path.open("ab") as handle:
        handle.write(line[:100])
    index = indexed(path)
    assert index.rows == 2
    with path.open("ab") as handle:
        handle.write(line[100:])
    assert index.step() and index.rows == 3 and index.read(2) == rows[2]
    assert not index.step()


def test_lines_that_are_not_rollouts_are_counted_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    good = list(synthetic_rows(3))
    path.write_bytes(
        b"\n".join(
            [orjson.dumps(good[0]), b"", b"{oops", b"[1, 2]", orjson.dumps(good[1]), b"   ", orjson.dumps(good[2])]
        )
        + b"\n"
    )
    index = indexed(path)
    assert index.rows == 3
    assert [index.line_numbers[i] for i in range(3)] == [1, 5, 7]
    assert index.bad_count == 2
    assert [(bad.line, bad.reason.split(" ")[0]) for bad in index.bad_lines] == [(3, "not"), (4, "a")]
    assert "JSON list" in index.bad_lines[1].reason


def test_a_file_written_afresh_is_indexed_afresh(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write(path, list(synthetic_rows(8)))
    index = indexed(path)
    epoch = index.epoch
    path.unlink()  # +overwrite=true: the output starts again
    write(path, list(synthetic_rows(3, seed=5)))
    index.catch_up()
    assert index.epoch > epoch and index.rows == 3
    # The same file rewritten in place, longer than before: its end is not what was indexed.
    epoch = index.epoch
    rewritten = list(synthetic_rows(20, seed=9))
    with path.open("r+b") as handle:
        handle.write(b"".join(orjson.dumps(row) + b"\n" for row in rewritten))
    index.catch_up()
    assert index.epoch > epoch and index.rows == 20 and index.read(19) == rewritten[19]
    path.unlink()
    index.catch_up()
    assert not index.exists and index.rows == 0


def test_a_field_with_too_many_values_becomes_text(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = [
        {**row, "note": f"note {n}", "flag": n % 2 == 0} for n, row in enumerate(synthetic_rows(MAX_LABEL_VALUES + 5))
    ]
    write(path, rows)
    index = indexed(path)
    assert "note" not in index.labels and "note" in index.text_fields
    flags = index.labels["flag"]
    assert flags.counts() == {"true": (MAX_LABEL_VALUES + 6) // 2, "false": (MAX_LABEL_VALUES + 5) // 2}
    assert all(len(column) == index.rows for column in index.numbers.values())
    assert all(len(column.codes) == index.rows for column in index.labels.values())


def test_fields_appearing_late_are_missing_before(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = list(synthetic_rows(5))
    rows[3]["judge_score"] = 0.25
    rows[4]["verdict"] = "partial"
    write(path, rows)
    index = indexed(path)
    assert [index.numbers["judge_score"][i] for i in range(5)][3] == 0.25
    assert math.isnan(index.numbers["judge_score"][0]) and math.isnan(index.numbers["judge_score"][4])
    assert [index.labels["verdict"].codes[i] for i in range(5)] == [0, 0, 0, 0, 1]


def test_failure_records_are_indexed_with_their_class(tmp_path: Path) -> None:
    path = tmp_path / "out.failures.jsonl"
    write(
        path,
        [
            {
                "_ng_task_index": 4,
                "_ng_rollout_index": 1,
                "agent_ref": {"type": "responses_api_agents", "name": "a"},
                "class": "model",
                "status": 502,
                "error": "vLLM went away",
            }
        ],
    )
    index = indexed(path, "failures")
    assert index.rows == 1 and index.status[0] == FAILED and index.task[0] == 4
    assert index.labels["class"].values[index.labels["class"].codes[0]] == "model"
    assert index.numbers["http_status"][0] == 502


def test_rows_without_a_response_or_indices_are_still_rows(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write(path, [{"reward": 0.5}, {**weather_row(1, 0, city="Oslo", reward=1.0), "_ng_task_index": "x"}])
    index = indexed(path)
    assert index.rows == 2 and index.task[0] == -1 and index.task[1] == -1
    assert math.isnan(index.numbers["turns"][0]) and index.numbers["turns"][1] == 2


def test_pieces_end_on_newlines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write(path, list(synthetic_rows(40)))
    size = path.stat().st_size
    ranges = pieces(path, 0, size, piece_bytes=5000)
    data = path.read_bytes()
    assert ranges[0][0] == 0 and ranges[-1][1] == size and len(ranges) > 5
    assert all(
        data[stop - 1 : stop] == b"\n" and stop == start_next
        for (_, stop), (start_next, _) in itertools.pairwise(ranges)
    )


async def test_a_parallel_build_equals_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = list(synthetic_rows(300, tokens=True))
    rows[150]["late_field"] = 3.0
    rows[200]["late_label"] = "x"
    write(path, rows)
    with path.open("ab") as handle:
        handle.write(b"{not json\n")
    write(path, list(synthetic_rows(10, seed=3)))
    one_pass = indexed(path)
    parallel = RowIndex(path, rollout_facts, BUILTIN_NUMBERS, chunk_bytes=8 << 10)  # a small first step
    pool = executor(2)
    try:
        await build(parallel, "rollouts", pool=pool, piece_bytes=64 << 10)
    finally:
        pool.shutdown()
    assert parallel.position == os.path.getsize(path)  # the workers' pieces, absorbed in order
    for name in ("offsets", "lengths", "line_numbers", "task", "rollout", "status", "prompt"):
        assert getattr(parallel, name) == getattr(one_pass, name), name
    assert [parallel.agents[code] for code in parallel.agent] == [one_pass.agents[code] for code in one_pass.agent]
    assert set(parallel.numbers) == set(one_pass.numbers)
    for name, values in one_pass.numbers.items():
        assert [v if v == v else None for v in parallel.numbers[name]] == [v if v == v else None for v in values]
    for name, labels in one_pass.labels.items():
        theirs = parallel.labels[name]
        assert [theirs.values[c] for c in theirs.codes] == [labels.values[c] for c in labels.codes], name
    assert parallel.bad_count == 1 and parallel.bad_lines[0].line == one_pass.bad_lines[0].line == 301


@pytest.mark.parametrize("kind", ["rollouts", "failures"])
def test_a_missing_file_is_an_empty_index(tmp_path: Path, kind: str) -> None:
    index = indexed(tmp_path / "none.jsonl", kind)
    assert index.rows == 0 and not index.exists and not index.indexing
