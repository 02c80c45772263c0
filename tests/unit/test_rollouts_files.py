from pathlib import Path

import pytest

from ngym.config.errors import ConfigError
from ngym.rollouts.output import JsonlAppender, read_done, repair_partial_line
from ngym.rollouts.summary import Summary


def test_partial_last_line_is_cut_and_done_keys_read_back(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = JsonlAppender(out)
    writer.write({"reward": 1.0, "_ng_task_index": 0, "_ng_rollout_index": 0})
    writer.write({"reward": 0.0, "_ng_task_index": 1, "_ng_rollout_index": 2})
    writer.close()
    with out.open("ab") as handle:
        handle.write(b'{"reward": 1.0, "_ng_task_ind')
    assert repair_partial_line(out) > 0
    assert out.read_bytes().endswith(b"}\n")
    seen: list[float] = []
    assert read_done(out, lambda row: seen.append(row["reward"])) == {(0, 0), (1, 2)}
    assert seen == [1.0, 0.0]
    assert repair_partial_line(out) == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"reward": 1.0, "_ngym": {"task_index": 0, "repeat_index": 0}}', r"out\.jsonl:2: a row of an older ngym"),
        (b'{"reward": 1.0, "_ng_task_index": 0}', r"out\.jsonl:2: the row has no whole-number _ng_task_index and"),
        (b'{"reward": 1.0, "_ng_task_index": "0", "_ng_rollout_index": 0}', r"out\.jsonl:2: the row has no whole"),
        (b"{oops", r"out\.jsonl:2: not valid JSON"),
        (b'{"reward": 1.0, "_ng_task_index": 0, "_ng_rollout_index": 1}', r"out\.jsonl:2: task 0, rollout 1 is alr"),
    ],
)
def test_an_output_row_that_cannot_be_resumed_is_named(tmp_path: Path, line: bytes, message: str) -> None:
    """Resuming past a row that does not say which rollout it is would collect that rollout twice."""
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"reward": 0.0, "_ng_task_index": 0, "_ng_rollout_index": 1}\n' + line + b"\n")
    with pytest.raises(ConfigError, match=message):
        read_done(out)


def test_summary_counts_numeric_fields_reward_first() -> None:
    summary = Summary(expected=3)
    summary.add({"reward": 1.0, "a_len": 4, "flag": True, "text": "x", "_ng_task_index": 3})
    summary.add({"reward": 0.0, "a_len": 2, "_ng_rollout_index": 1})
    summary.failed = 1
    data = summary.as_dict(2.0)
    assert list(data["fields"]) == ["reward", "a_len"]
    assert data["fields"]["reward"] == {"count": 2, "mean": 0.5, "min": 0.0, "max": 1.0}
    assert data["finished"] == 2 and data["failed"] == 1 and data["missing"] == 0
    assert "2 finished rollouts; 1 failed" in summary.table(2.0)


def test_summary_includes_rows_of_earlier_runs() -> None:
    summary = Summary(expected=3)
    summary.add_earlier({"reward": 1.0, "_ng_task_index": 0})
    summary.add({"reward": 0.0})
    summary.failed = 1
    data = summary.as_dict(1.0)
    assert (data["already_done"], data["finished"], data["missing"]) == (1, 1, 0)
    assert data["fields"] == {"reward": {"count": 2, "mean": 0.5, "min": 0.0, "max": 1.0}}
    assert "(+1 from earlier runs)" in summary.table(1.0)
    assert "means are over the 2 finished rollouts; 1 failed" in summary.table(1.0)
