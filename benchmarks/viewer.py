"""ng_viewer at scale: a generated 1,000,000-row rollout file; how long the index takes (one process, and
spread over worker processes), how soon the real `ng_viewer` shows the first page, how long the table's
queries take over every row, and how much memory the server holds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.procs import peak_rss_mib
from benchmarks.report import table as markdown_table
from ngym.viewer.build import build, executor, new_index, workers
from testkit.gym_process import console_script
from testkit.viewer_rows import synthetic_rows

ROOT = Path(__file__).resolve().parent.parent
QUERIES = (
    ("first page, file order", "/api/rows?per_page=50"),
    ("sorted by reward", "/api/rows?per_page=50&sort=-reward"),
    ("incomplete only", "/api/rows?per_page=50&status=incomplete"),
    ("reward 0 of one agent", "/api/rows?per_page=50&range=reward:0:0&agent=weather_agent_b"),
    ("full-text search", "/api/rows?per_page=50&q=Z%C3%BCrich"),
    ("summary", "/api/summary"),
    ("groups by spread", "/api/groups?sort=-spread"),
)


@dataclass(frozen=True)
class Settings:
    rows: int = 1_000_000
    results_dir: Path = ROOT / "benchmarks" / "results"


def rollout_file(settings: Settings, log: Callable[[str], None]) -> Path:
    """The generated file, made once (benchmarks/results is git-ignored)."""
    path = settings.results_dir / f"viewer-{settings.rows}.jsonl"
    done = path.with_suffix(".done")
    if done.is_file() and path.is_file():
        return path
    log(f"writing {settings.rows:,} rows to {path}")
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        batch: list[bytes] = []
        for row in synthetic_rows(settings.rows):
            batch.append(orjson.dumps(row) + b"\n")
            if len(batch) == 10_000:
                handle.write(b"".join(batch))
                batch.clear()
        handle.write(b"".join(batch))
    done.touch()
    return path


def _index_seconds(path: Path, parallel: bool) -> tuple[float, int, int]:
    index = new_index(path, "rollouts")
    started = time.perf_counter()
    if parallel:
        pool = executor()

        async def run() -> None:
            await build(index, "rollouts", pool=pool)

        try:
            asyncio.run(run())
        finally:
            pool.shutdown()
    index.catch_up()
    return time.perf_counter() - started, index.rows, index.memory_bytes()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=600) as answer:
        return json.loads(answer.read())


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for pid {pid}")


def _serve(path: Path, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [console_script("ng_viewer"), f"+jsonl_fpath={path}", "+port=0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split(" at ")[1].split(" ")[0].rstrip("/")
        while True:  # the page's first request: a page of rows, answered as soon as the first chunk is indexed
            page = _get(f"{url}/api/rows?per_page=50")
            if len(page["rows"]) == 50:
                break
            time.sleep(0.05)
        first_page = time.perf_counter() - started
        log(f"first page after {first_page:.2f} s (rows indexed then: {_get(f'{url}/api/status')['rows']:,})")
        while (status := _get(f"{url}/api/status"))["indexing"]:
            time.sleep(0.2)
        indexed = time.perf_counter() - started
        rss_indexed = _rss_mib(process.pid)
        queries = []
        for name, query in QUERIES:
            began = time.perf_counter()
            answer = _get(url + query)
            seconds = time.perf_counter() - began
            total = answer.get("total", status["rows"])
            queries.append({"query": name, "path": query, "seconds": round(seconds, 3), "rows": total})
            log(f"{name}: {seconds:.2f} s")
        return {
            "first_page_s": round(first_page, 2),
            "all_indexed_s": round(indexed, 2),
            "rows": status["rows"],
            "rss_mib_indexed": round(rss_indexed, 1),
            "rss_mib_after_queries": round(_rss_mib(process.pid), 1),
            "peak_rss_mib": round(peak_rss_mib(process.pid), 1),
            "queries": queries,
        }
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def run(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    path = rollout_file(settings, log)
    size = path.stat().st_size
    log(f"{path}: {size / 2**30:.2f} GiB, {settings.rows:,} rows; indexing in one process")
    one_s, rows, columns = _index_seconds(path, parallel=False)
    log(f"one process: {one_s:.1f} s; with {workers()} worker processes")
    parallel_s, _, _ = _index_seconds(path, parallel=True)
    log(f"{workers()} workers: {parallel_s:.1f} s; now the real ng_viewer")
    return {
        "file": str(path.relative_to(ROOT)),
        "rows": rows,
        "bytes": size,
        "index_one_process_s": round(one_s, 2),
        "index_workers": workers(),
        "index_parallel_s": round(parallel_s, 2),
        "index_columns_mib": round(columns / 2**20, 1),
        "server": _serve(path, log),
        "cpus": os.cpu_count(),
    }


def report(result: dict[str, Any]) -> str:
    server = result["server"]
    mib_per_gib = result["bytes"] / 2**30
    lines = [
        markdown_table(
            ["measure", "value"],
            [
                ["file", f"{result['rows']:,} rows, {mib_per_gib:.2f} GiB"],
                ["index, one process (s)", result["index_one_process_s"]],
                [f"index, {result['index_workers']} worker processes (s)", result["index_parallel_s"]],
                ["index columns in memory (MiB)", result["index_columns_mib"]],
                ["ng_viewer start to first page of rows (s)", server["first_page_s"]],
                ["ng_viewer start to every row indexed (s)", server["all_indexed_s"]],
                ["server RSS, all indexed (MiB)", server["rss_mib_indexed"]],
                ["server RSS after the queries below (MiB)", server["rss_mib_after_queries"]],
                ["server peak RSS (MiB)", server["peak_rss_mib"]],
            ],
        ),
        "",
        markdown_table(
            ["query over every row (first time, no cache)", "rows matched", "seconds"],
            [[q["query"], q["rows"], q["seconds"]] for q in server["queries"]],
        ),
    ]
    return "\n".join(lines)
