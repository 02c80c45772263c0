from pathlib import Path

import orjson
import pytest

from ngym.config.errors import ConfigError
from ngym.rollouts.output import META_KEY, JsonlAppender, done_keys, repair_partial_line
from ngym.rollouts.summary import Summary
from ngym.rollouts.tasks import check_input, iter_tasks


def rows_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def row(name: str) -> str:
    return orjson.dumps({"responses_create_params": {"input": name}, "name": name}).decode()


def test_repeats_are_grouped_and_limit_wraps_around_a_short_file(tmp_path: Path) -> None:
    path = rows_file(tmp_path, [row("a"), "", row("b"), row("c")])
    assert check_input(path, None) == 3
    tasks = list(iter_tasks(path, None, 2, None))
    assert [(t.index, t.repeat, t.row["name"]) for t in tasks] == [
        (0, 0, "a"), (0, 1, "a"), (1, 0, "b"), (1, 1, "b"), (2, 0, "c"), (2, 1, "c"),
    ]  # fmt: skip
    assert check_input(path, 5) == 5
    assert [t.row["name"] for t in iter_tasks(path, 5, 1, None)] == ["a", "b", "c", "a", "b"]
    assert [t.index for t in iter_tasks(path, 5, 1, None)] == [0, 1, 2, 3, 4]
    assert [t.row["name"] for t in iter_tasks(path, 2, 1, None)] == ["a", "b"]


def test_responses_create_params_override_is_merged_into_each_row(tmp_path: Path) -> None:
    path = rows_file(tmp_path, [row("a")])
    (task,) = iter_tasks(path, None, 1, {"temperature": 0.0})
    assert task.row["responses_create_params"] == {"input": "a", "temperature": 0.0}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"in\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"in\.jsonl:2: a row must be a JSON object"),
        ('{"input": "x"}', r"in\.jsonl:2: the row has no 'responses_create_params' object"),
    ],
)
def test_bad_input_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = rows_file(tmp_path, [row("a"), line])
    with pytest.raises(ConfigError, match=message):
        check_input(path, None)


def test_missing_input_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="input file not found"):
        check_input(tmp_path / "nope.jsonl", None)


def test_partial_last_line_is_cut_and_done_keys_read_back(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = JsonlAppender(out)
    writer.write({"reward": 1.0, META_KEY: {"task_index": 0, "repeat_index": 0}})
    writer.write({"reward": 0.0, META_KEY: {"task_index": 1, "repeat_index": 2}})
    writer.close()
    with out.open("ab") as handle:
        handle.write(b'{"reward": 1.0, "_ngym": {"task_ind')
    assert repair_partial_line(out) > 0
    assert out.read_bytes().endswith(b"}\n")
    assert set(done_keys(out)) == {(0, 0), (1, 2)}
    assert repair_partial_line(out) == 0


def test_summary_counts_numeric_fields_reward_first() -> None:
    summary = Summary(expected=3)
    summary.add({"reward": 1.0, "a_len": 4, "flag": True, "text": "x"})
    summary.add({"reward": 0.0, "a_len": 2})
    summary.failed = 1
    data = summary.as_dict(2.0)
    assert list(data["fields"]) == ["reward", "a_len"]
    assert data["fields"]["reward"] == {"count": 2, "mean": 0.5, "min": 0.0, "max": 1.0}
    assert data["finished"] == 2 and data["failed"] == 1 and data["missing"] == 0
    assert "2 finished rollouts; 1 failed" in summary.table(2.0)
