"""The table `python -m benchmarks environments` writes into docs/environments.md, and its reasons."""

from __future__ import annotations

from pathlib import Path

from benchmarks.environments import (
    BEGIN,
    END,
    EnvironmentResult,
    load_results,
    save_results,
    short_reason,
    table,
    totals,
    write_table,
)

RESULTS = [
    EnvironmentResult("b_env", installs=True, starts=True, tried=5, matched=5, seconds=2.0),
    EnvironmentResult("a_env", installs=False, install_reason="cannot install x|y", seconds=1.5),
    EnvironmentResult("c_env", installs=True, start_reason="ModuleNotFoundError: No module named 'ray'"),
    EnvironmentResult("d_env", installs=True, starts=True, tried=5, matched=4, mismatches=["row 1"]),
    EnvironmentResult("e_env", installs=True, starts=True),
]


def test_table_rows_sorted_with_reasons_and_totals() -> None:
    text = table(RESULTS)
    lines = text.splitlines()
    assert lines[0] == "| environment | installs | starts | matched / tried | seconds |"
    assert lines[2] == "| a_env | no: cannot install x\\|y | — | — | 1.5 |"
    assert lines[3] == "| b_env | yes | yes | 5/5 | 2 |"
    assert lines[4] == "| c_env | yes | no: ModuleNotFoundError: No module named 'ray' | — | 0 |"
    assert lines[5] == "| d_env | yes | yes | 4/5 | 0 |"
    assert lines[6] == "| e_env | yes | yes | no recorded rows | 0 |"
    assert lines[-1] == "Tried 5, installed 4, started 3, 2 with recorded rows, 1 matching every recorded reward."
    assert totals(RESULTS)["fully_matched"] == 1


def test_write_table_replaces_only_between_markers(tmp_path: Path) -> None:
    doc = tmp_path / "environments.md"
    doc.write_text("# Title\n\nbefore\n")
    write_table(doc, "first")
    assert doc.read_text() == f"# Title\n\nbefore\n\n{BEGIN}\n\nfirst\n\n{END}\n"
    doc.write_text(doc.read_text() + "\n## After\n\nkept\n")
    write_table(doc, "second")
    text = doc.read_text()
    assert "first" not in text and f"{BEGIN}\n\nsecond\n\n{END}" in text
    assert text.startswith("# Title\n\nbefore\n") and text.endswith("\n## After\n\nkept\n")


def test_results_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "environments.json"
    save_results({r.name: r for r in RESULTS}, path)
    assert load_results(path) == {r.name: r for r in RESULTS}


def test_short_reason_takes_the_exception_line() -> None:
    log = "INFO starting\nTraceback (most recent call last):\n  File x\nModuleNotFoundError: No module named 'ray'\n"
    assert short_reason(log) == "ModuleNotFoundError: No module named 'ray'"
    assert short_reason("just a line\nlast line") == "last line"
    assert short_reason("") == "no output"
