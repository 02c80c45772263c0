"""The viewer's HTTP API and page: answers, 4xx errors in the OpenAI shape, following a file being written, and
the `ng_viewer` command."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ngym.cli.viewer import main as viewer_main
from ngym.http.app import serve_in_background
from ngym.rollouts.output import JsonlAppender
from ngym.viewer.server import viewer_app
from ngym.viewer.state import Viewer, ViewerConfig
from ngym.viewer.tokens import Vocab
from testkit.gym_process import console_script
from testkit.viewer_rows import synthetic_rows

ROOT = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 30


def write(path: Path, rows: list[dict[str, Any]]) -> None:
    writer = JsonlAppender(path)
    for row in rows:
        writer.write(row)
    writer.close()


@pytest.fixture
async def viewer_url(tmp_path: Path) -> AsyncIterator[str]:
    write(tmp_path / "out.jsonl", list(synthetic_rows(24, tokens=True)))
    write(
        tmp_path / "out.failures.jsonl",
        [{"_ng_task_index": 1, "_ng_rollout_index": 5, "class": "tool", "status": 500, "error": "get_weather crashed"}],
    )
    config = ViewerConfig(tmp_path / "out.jsonl", tokenizer=Vocab.load(ROOT / "models" / "weather-policy"))
    async with serve_in_background(viewer_app(Viewer(config))) as url:
        await until(url, lambda status: status["rows"] == 24 and status["failures"] == 1)
        yield url


async def get(url: str) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        body = await answer.read()
        parsed = orjson.loads(body) if answer.content_type == "application/json" else body.decode()
        return answer.status, parsed, dict(answer.headers)


async def until(url: str, done: Any) -> dict[str, Any]:
    async def wait() -> dict[str, Any]:
        while True:
            _, status, _ = await get(f"{url}/api/status")
            if done(status):
                return dict(status)
            await asyncio.sleep(0.1)

    return await asyncio.wait_for(wait(), HANG_GUARD_S)  # a hang guard, not a timing assertion


async def test_the_api_answers_each_view(viewer_url: str) -> None:
    status, summary, _ = await get(f"{viewer_url}/api/summary")
    assert status == 200 and summary["finished"] == 24 and summary["failed"] == 1
    assert summary["failed_by_class"] == {"tool": 1}
    _, rows, _ = await get(f"{viewer_url}/api/rows?sort=-reward&per_page=5&status=completed")
    assert rows["total"] == 24 and len(rows["rows"]) == 5 and rows["rows"][0]["numbers"]["reward"] == 1.0
    _, row, _ = await get(f"{viewer_url}/api/rows/r3?sort=-reward&status=completed")
    assert row["kind"] == "rollout" and row["has_tokens"] and row["line"] == 4 and row["position"] is not None
    _, failure, _ = await get(f"{viewer_url}/api/rows/f0")
    assert failure["kind"] == "failure" and failure["class"] == "tool" and failure["input_from"] == "r4"
    assert failure["input"][1]["text"] == "How's the weather in Tokyo?"
    _, tokens, _ = await get(f"{viewer_url}/api/rows/r3/tokens")
    assert len(tokens["turns"]) == 2 and tokens["pieces"] and tokens["tokenizer"].endswith("weather-policy")
    _, plain, _ = await get(f"{viewer_url}/api/rows/r0")
    shown = plain["turns"][0]["items"][0]["arguments"]["text"]
    _, value, _ = await get(f"{viewer_url}/api/rows/r0/value?path=response.output.0.arguments")
    assert orjson.loads(value["text"]) == orjson.loads(shown) and "city" in orjson.loads(shown)
    _, groups, _ = await get(f"{viewer_url}/api/groups?only=mixed&sort=-spread")
    assert all(not group["zero_advantage"] for group in groups["rows"])
    _, group, _ = await get(f"{viewer_url}/api/groups/2")
    assert [card["rollout"] for card in group["members"]] == [0, 1, 2, 3]
    _, fields, _ = await get(f"{viewer_url}/api/fields")
    assert fields["agents"] == ["simple_weather_simple_agent"] and "reason" in fields["labels"]


@pytest.mark.parametrize(
    ("path", "code", "param", "message"),
    [
        ("/api/rows?sort=bogus", 400, "sort", "no numeric field 'bogus'"),
        ("/api/rows?page=x", 400, "page", "not a whole number"),
        ("/api/rows/r99", 404, "id", "has 24 rows indexed"),
        ("/api/rows/zz", 404, "id", "rows are r<number>"),
        ("/api/rows/f0/tokens", 400, "id", "failed rollout"),
        ("/api/rows/r0/value?path=response.nope", 404, "path", "nothing at 'nope'"),
        ("/api/rows/r0/value?path=x&extra=1", 400, "extra", "unknown parameter 'extra'"),
        ("/api/groups?only=some", 400, "only", "expected one of zero, mixed"),
        ("/api/groups/77", 404, "task", "no task '77'"),
        ("/api/compare", 404, None, "+compare_jsonl_fpath"),
        ("/api/nothing", 404, None, "no route /api/nothing"),
    ],
)
async def test_mistakes_are_4xx_in_the_openai_shape(
    viewer_url: str, path: str, code: int, param: str | None, message: str
) -> None:
    status, body, _ = await get(viewer_url + path)
    assert status == code
    assert body["error"]["param"] == param and message in body["error"]["message"]


async def test_the_page_and_its_scripts_are_served(viewer_url: str) -> None:
    status, html, headers = await get(f"{viewer_url}/")
    assert status == 200 and "/static/app.js" in html
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name in ("app.js", "dom.js", "table.js", "rollout.js", "tokens.js", "summary.js", "groups.js", "compare.js"):
        status, script, headers = await get(f"{viewer_url}/static/{name}")
        assert status == 200 and "javascript" in headers["Content-Type"] and "innerHTML" not in script, name


async def test_rows_appended_while_the_viewer_runs_appear(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    rows = list(synthetic_rows(12))
    write(path, rows[:4])
    async with serve_in_background(viewer_app(Viewer(ViewerConfig(path)))) as url:
        first = await until(url, lambda status: status["rows"] == 4)
        writer = JsonlAppender(path)
        for row in rows[4:]:
            writer.write(row)
        line = orjson.dumps({"reward": 0.0}) + b"\n"
        with path.open("ab") as handle:
            handle.write(line[:5])  # a writer's partial line: not a row yet
        later = await until(url, lambda status: status["rows"] == 12)
        assert later["version"] != first["version"]
        with path.open("ab") as handle:
            handle.write(line[5:])
        await until(url, lambda status: status["rows"] == 13)
        failures = tmp_path / "out.failures.jsonl"
        failures.write_bytes(b'{"class": "model", "status": 502, "error": "x"}\n')
        await until(url, lambda status: status["failures"] == 1)
        failures.unlink()  # the next ng_collect_rollouts run starts its failures afresh
        await until(url, lambda status: status["failures"] == 0)
        writer.close()


def test_bad_arguments_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "out.jsonl"
    write(existing, list(synthetic_rows(2)))
    cases = [
        ([], "missing +jsonl_fpath"),
        ([f"+jsonl_fpath={existing}", "+prot=1"], "unknown argument +prot (did you mean +port?)"),
        ([f"+jsonl_fpath={tmp_path / 'no' / 'none.jsonl'}"], "no such file"),
        ([f"+jsonl_fpath={tmp_path}"], "is a folder"),
        ([f"+jsonl_fpath={existing}", "+port=70000"], "+port=70000"),
        ([f"+jsonl_fpath={existing}", f"+tokenizer={tmp_path}"], "no tokenizer.json there"),
        ([f"+jsonl_fpath={existing}", "+compare_jsonl_fpath=nope.jsonl"], "+compare_jsonl_fpath=nope.jsonl: no such"),
    ]
    for args, message in cases:
        assert viewer_main(args) == 2, args
        assert message in capsys.readouterr().err, args


def test_a_port_in_use_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "out.jsonl"
    write(existing, list(synthetic_rows(2)))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert viewer_main([f"+jsonl_fpath={existing}", f"+port={port}"]) == 2
    assert f"+port={port}: the port is in use" in capsys.readouterr().err


def test_ng_viewer_serves_until_interrupted(tmp_path: Path) -> None:
    """Started before the run has written anything, as a user watching ng_collect_rollouts would."""
    path = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [console_script("ng_viewer"), f"+jsonl_fpath={path}", "+port=0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"ng_viewer: {path} at http://127.0.0.1:"), line
        assert "does not exist yet" in process.stdout.readline()
        url = line.split(" at ")[1].split(" ")[0].rstrip("/")
        assert asyncio.run(until(url, lambda status: not status["exists"]))["rows"] == 0
        write(path, list(synthetic_rows(3)))
        status = asyncio.run(until(url, lambda status: status["rows"] == 3))
        assert status["file"] == str(path)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(HANG_GUARD_S)
    assert code == 0, process.stderr.read() if process.stderr else ""
    assert not os.path.exists(tmp_path / "out.failures.jsonl")  # the viewer writes nothing
