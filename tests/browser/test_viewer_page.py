"""ng_viewer in headless Chromium over real rollout files (the seed flow in training mode): what the page shows
is checked against the files themselves. Screenshots go to .artifacts/viewer/."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from ngym.rollouts.output import JsonlAppender
from tests.browser.conftest import ROOT, RunningViewer, start_viewer
from tests.browser.rollout_files import REPEATS

pytestmark = [pytest.mark.browser, pytest.mark.vllm]
WAIT_MS = 30_000  # a hang guard for what the page loads, not a timing assertion


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def failures_of(path: Path) -> list[dict[str, Any]]:
    return read(path.with_name(path.stem + ".failures.jsonl"))


def by_id(page: Any, name: str) -> Any:
    return page.locator(f'[data-testid="{name}"]')


def open_view(page: Any, viewer: RunningViewer, query: str) -> None:
    page.goto(f"{viewer.url}/?{query}")
    page.wait_for_selector('[data-testid^="view-"] h2', timeout=WAIT_MS)


def card(page: Any, name: str) -> str:
    return str(by_id(page, name).locator(".value").inner_text())


def final_text(row: dict[str, Any]) -> str:
    message = [item for item in row["response"]["output"] if item["type"] == "message"][-1]
    return str(message["content"][0]["text"])


def test_summary_counts_the_run(
    page: Any, viewer: RunningViewer, rollout_files: dict[str, Path], artifacts: Path
) -> None:
    rows = read(rollout_files["hot.jsonl"])
    summary = json.loads(rollout_files["hot.jsonl"].with_name("hot.summary.json").read_text())
    open_view(page, viewer, "view=summary")
    assert card(page, "card-expected") == str(summary["expected"])
    assert card(page, "card-finished") == str(len(rows))
    assert card(page, "card-failed") == str(len(failures_of(rollout_files["hot.jsonl"])))
    incomplete = sum(row["response"]["status"] == "incomplete" for row in rows)
    assert incomplete >= REPEATS and card(page, "card-incomplete") == str(incomplete)
    mean = sum(row["reward"] for row in rows) / len(rows)
    assert float(card(page, "card-mean-reward")) == pytest.approx(mean, abs=1e-3)
    bars = by_id(page, "hist-reward").locator("rect")
    assert bars.count() == 2  # rewards 0 and 1
    assert "invalid_task" in by_id(page, "failures-by-class").inner_text()
    assert by_id(page, "pass-at-k").locator("tbody tr").count() == 3  # k = 1, 2, 4
    assert by_id(page, "live-rows").inner_text() == f"{len(rows)} rollouts"
    page.screenshot(path=str(artifacts / "summary.png"), full_page=True)


def test_the_table_filters_sorts_and_keeps_its_state_in_the_url(
    page: Any, viewer: RunningViewer, rollout_files: dict[str, Path], artifacts: Path
) -> None:
    rows = read(rollout_files["hot.jsonl"])
    open_view(page, viewer, "view=rollouts")
    assert by_id(page, "total").inner_text() == f"{len(rows) + len(failures_of(rollout_files['hot.jsonl']))} rows"
    by_id(page, "status-filter").select_option("incomplete")
    page.wait_for_url(re.compile(r"status=incomplete"), timeout=WAIT_MS)
    incomplete = [row for row in rows if row["response"]["status"] == "incomplete"]
    by_id(page, "total").filter(has_text=f"{len(incomplete)} rows").wait_for(timeout=WAIT_MS)
    assert by_id(page, "row").count() == len(incomplete)
    page.reload()  # the view is the URL
    by_id(page, "total").filter(has_text=f"{len(incomplete)} rows").wait_for(timeout=WAIT_MS)
    assert by_id(page, "status-filter").input_value() == "incomplete"

    by_id(page, "clear-filters").click()
    by_id(page, "search").fill("reykjavik")
    by_id(page, "search").press("Enter")
    page.wait_for_url(re.compile(r"q=reykjavik"), timeout=WAIT_MS)
    matching = [row for row in rows if "reykjavik" in json.dumps(row, ensure_ascii=False).lower()]
    assert matching
    by_id(page, "total").filter(has_text=f"{len(matching)} rows").wait_for(timeout=WAIT_MS)

    by_id(page, "clear-filters").click()
    by_id(page, "reward-min").fill("1")
    by_id(page, "reward-apply").click()
    page.wait_for_url(re.compile(r"range=reward%3A1%3A"), timeout=WAIT_MS)
    rewarded = [row for row in rows if row["reward"] >= 1]
    by_id(page, "total").filter(has_text=f"{len(rewarded)} rows").wait_for(timeout=WAIT_MS)
    by_id(page, "sort-output_tokens").click()  # most tokens first
    page.wait_for_url(re.compile(r"sort=-output_tokens"), timeout=WAIT_MS)
    most = max(sum(len(item.get("generation_token_ids", [])) for item in row["response"]["output"]) for row in rewarded)
    first_row = by_id(page, "row").first
    assert f"{most:,}" in first_row.inner_text().split("\t")
    page.screenshot(path=str(artifacts / "table.png"), full_page=True)


def test_a_rollout_reads_as_a_conversation_and_as_tokens(
    page: Any, viewer: RunningViewer, rollout_files: dict[str, Path], artifacts: Path
) -> None:
    rows = read(rollout_files["hot.jsonl"])
    open_view(page, viewer, "view=rollouts&range=reward:1:1")
    first = by_id(page, "row").first
    row_id = first.get_attribute("data-id")
    row = rows[int(row_id[1:])]
    first.click()
    page.wait_for_url(re.compile(r"view=rollout&id=r\d+"), timeout=WAIT_MS)
    by_id(page, "conversation").wait_for(timeout=WAIT_MS)
    assert by_id(page, "reward").inner_text() == "reward 1"
    assert row["called_city"] in by_id(page, "verifier-fields").inner_text()
    calls = [item for item in row["response"]["output"] if item["type"] == "function_call"]
    tool_call = by_id(page, "tool-call").first
    assert "get_weather" in tool_call.inner_text()
    shown = tool_call.locator("pre").inner_text()
    assert "\n" in shown and json.loads(shown) == json.loads(calls[0]["arguments"])  # pretty JSON of the arguments
    assert "weather_description" in by_id(page, "tool-output").first.inner_text()
    assert final_text(row) in by_id(page, "message-assistant").last.inner_text()
    turns = [item for item in row["response"]["output"] if "generation_token_ids" in item]
    assert by_id(page, "turn").count() == len(turns)
    page.screenshot(path=str(artifacts / "conversation.png"), full_page=True)

    by_id(page, "tab-tokens").click()
    page.wait_for_url(re.compile(r"tab=tokens"), timeout=WAIT_MS)
    by_id(page, "token-view").wait_for(timeout=WAIT_MS)
    assert "decoded with" in by_id(page, "tokenizer").inner_text()
    assert by_id(page, "token-turn").count() == len(turns) == by_id(page, "boundary").count()
    last = by_id(page, "token-turn").last
    generated = len(turns[-1]["generation_token_ids"])
    assert last.locator(".tok.gen").count() == generated
    low = sum(math.exp(lp) < 0.1 for lp in turns[-1]["generation_log_probs"])
    assert last.locator(".tok.gen.low").count() == low
    assert final_text(row) in last.locator('[data-testid="generated-text"]').text_content()
    assert by_id(page, "diverges").count() == 0  # vLLM's token endpoints: every prompt continues the turn before
    page.screenshot(path=str(artifacts / "tokens.png"), full_page=True)

    by_id(page, "next").click()
    page.wait_for_url(re.compile(r"tab=tokens"), timeout=WAIT_MS)
    assert f"id={row_id}&" not in page.url


def test_a_failed_rollout_pins_its_error(page: Any, viewer: RunningViewer, rollout_files: dict[str, Path]) -> None:
    failures = failures_of(rollout_files["hot.jsonl"])
    open_view(page, viewer, "view=rollouts&status=failed")
    assert by_id(page, "row").count() == len(failures)
    by_id(page, "row").first.click()
    by_id(page, "failure-error").wait_for(timeout=WAIT_MS)
    assert failures[0]["error"] in by_id(page, "failure-error").inner_text()
    assert "failed: invalid_task" in by_id(page, "pinned").inner_text()


def test_groups_flag_zero_advantage(
    page: Any, viewer: RunningViewer, rollout_files: dict[str, Path], artifacts: Path
) -> None:
    rewards: dict[int, list[float]] = {}
    for row in read(rollout_files["hot.jsonl"]):
        rewards.setdefault(row["_ng_task_index"], []).append(row["reward"])
    zero = sorted(task for task, values in rewards.items() if len(set(values)) == 1)
    assert zero  # the task asked about another city and the one cut at 3 tokens always score 0
    open_view(page, viewer, "view=groups&sort=-spread")
    assert f"{len(zero)} have every reward the same" in by_id(page, "groups-totals").inner_text()
    page.screenshot(path=str(artifacts / "groups.png"), full_page=True)
    by_id(page, "groups-only").select_option("zero")
    page.wait_for_url(re.compile(r"only=zero"), timeout=WAIT_MS)
    by_id(page, "groups-table").locator("tbody tr").nth(len(zero) - 1).wait_for(timeout=WAIT_MS)
    shown = sorted(int(r.get_attribute("data-task")) for r in by_id(page, "group-row").all())
    assert shown == zero
    by_id(page, "group-row").first.click()
    by_id(page, "rollout-cards").wait_for(timeout=WAIT_MS)
    assert by_id(page, "rollout-card").count() == REPEATS
    assert "zero advantage" in by_id(page, "group-stats").inner_text()


def test_two_files_compare_on_the_same_tasks(
    page: Any, viewer: RunningViewer, rollout_files: dict[str, Path], artifacts: Path
) -> None:
    def means(path: Path) -> dict[str, float]:
        found: dict[str, list[float]] = {}
        for row in read(path):
            found.setdefault(json.dumps(row["responses_create_params"]["input"]), []).append(row["reward"])
        return {prompt: sum(values) / len(values) for prompt, values in found.items()}

    hot, cool = means(rollout_files["hot.jsonl"]), means(rollout_files["cool.jsonl"])
    both = set(hot) & set(cool)
    open_view(page, viewer, "view=compare")
    assert card(page, "card-both") == str(len(both))
    assert card(page, "card-improved") == str(sum(cool[p] > hot[p] for p in both))
    assert card(page, "card-regressed") == str(sum(cool[p] < hot[p] for p in both))
    assert by_id(page, "compare-row").count() == len(set(hot) | set(cool))
    assert by_id(page, "file-b").inner_text() == str(rollout_files["cool.jsonl"].relative_to(ROOT))  # ng_viewer's cwd
    page.screenshot(path=str(artifacts / "compare.png"), full_page=True)


def test_rows_appear_while_the_file_is_written(
    page: Any, rollout_files: dict[str, Path], tmp_path: Path, artifacts: Path
) -> None:
    source = read(rollout_files["hot.jsonl"])
    growing = tmp_path / "growing.jsonl"
    writer = JsonlAppender(growing)  # the writer ng_collect_rollouts uses
    for row in source[:5]:
        writer.write(row)
    running = start_viewer(f"+jsonl_fpath={growing}")
    try:
        open_view(page, running, "view=rollouts")
        by_id(page, "total").filter(has_text="5 rows").wait_for(timeout=WAIT_MS)
        for row in source[5:12]:
            writer.write(row)
        by_id(page, "total").filter(has_text="12 rows").wait_for(timeout=WAIT_MS)  # no reload
        assert by_id(page, "live-rows").inner_text() == "12 rollouts"
        assert by_id(page, "row").count() == 12
        page.screenshot(path=str(artifacts / "live.png"), full_page=True)
    finally:
        writer.close()
        assert running.stop() == 0


def test_a_viewer_other_machines_can_reach_opens_only_from_its_printed_address(
    page: Any, rollout_files: dict[str, Path]
) -> None:
    running = start_viewer(f"+jsonl_fpath={rollout_files['hot.jsonl']}", "+host=0.0.0.0")
    try:
        base, token = running.url.replace("0.0.0.0", "127.0.0.1").split("/?token=")
        assert token
        assert page.request.get(f"{base}/api/status").status == 401  # no token, no data
        page.goto(f"{base}/?token={token}&view=rollouts")
        by_id(page, "row").first.wait_for(timeout=WAIT_MS)  # the page's own requests carry the cookie it got
        assert "token" not in page.url and "view=rollouts" in page.url  # a shared view never carries the token
        page.reload()
        by_id(page, "row").first.wait_for(timeout=WAIT_MS)
    finally:
        assert running.stop() == 0
