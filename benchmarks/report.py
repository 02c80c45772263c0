"""The machine a result was taken on, what else was running, and plain-text tables of the results."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.procs import cmdline, cpu_seconds

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or None


def machine() -> dict[str, Any]:
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git_commit": _git_commit(),
    }


def busy_processes(interval: float = 1.0, threshold: float = 0.2) -> list[dict[str, Any]]:
    """Other processes using more than `threshold` of a core right now: they compete with the benchmark."""
    mine = os.getpid()

    def sample() -> dict[int, float]:
        seconds: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != mine:
                try:
                    seconds[int(entry.name)] = cpu_seconds(int(entry.name))
                except (OSError, ValueError, IndexError):
                    continue
        return seconds

    before = sample()
    time.sleep(interval)
    after = sample()
    busy = []
    for pid, seconds in after.items():
        share = (seconds - before.get(pid, seconds)) / interval
        if share >= threshold:
            try:
                command = " ".join(cmdline(pid))[:120]
            except OSError:
                continue
            busy.append({"pid": pid, "cpu_share": round(share, 2), "command": command})
    return sorted(busy, key=lambda p: -p["cpu_share"])


def load_snapshot() -> dict[str, Any]:
    return {"loadavg": Path("/proc/loadavg").read_text().split()[:3], "busy_processes": busy_processes()}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable as plain text too); numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True))
    return "\n".join([line(headers), f"|{rule}|", *(line(row) for row in cells)])


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def model_server_table(rows: Sequence[dict[str, Any]]) -> str:
    headers = (
        "target", "mode", "turn", "conc", "req/s", "p50 ms", "p99 ms", "errors",
        "server CPU-s/1k", "server req/CPU-s", "stand-in CPU-s/1k", "loadgen CPU-s/1k", "server peak RSS MiB",
    )  # fmt: skip
    body = [
        (
            "model server" if row["target"] == "model_server" else "stand-in direct",
            row["mode"],
            row.get("turn", "first"),  # results from before the second turn was measured
            row["concurrency"],
            row["requests_per_s"],
            row["p50_ms"],
            row["p99_ms"],
            row["errors"],
            row["server_cpu_s_per_1000"] if row["target"] == "model_server" else None,
            row["server_requests_per_cpu_s"] if row["target"] == "model_server" else None,
            row["standin_cpu_s_per_1000"],
            row["loadgen_cpu_s_per_1000"],
            row["peak_rss_mib"],
        )
        for row in rows
    ]
    return table(headers, body)


def exact_vs_chat_table(rows: Sequence[dict[str, Any]]) -> str:
    """The token-exact path against the chat path (both training mode, same stand-in): model-server rows."""
    points = {(r["mode"], r.get("turn", "first"), r["concurrency"]): r for r in rows if r["target"] == "model_server"}
    body = []
    for (mode, turn, concurrency), exact in points.items():
        chat = points.get(("token_info", turn, concurrency))
        if mode != "token_exact" or chat is None:
            continue
        body.append(
            (
                turn,
                concurrency,
                chat["requests_per_s"],
                exact["requests_per_s"],
                f"{exact['requests_per_s'] / chat['requests_per_s']:.0%}" if chat["requests_per_s"] else "-",
                chat["server_cpu_s_per_1000"],
                exact["server_cpu_s_per_1000"],
                f"{exact['server_cpu_s_per_1000'] / chat['server_cpu_s_per_1000']:.2f}x"
                if chat["server_cpu_s_per_1000"]
                else "-",
            )
        )
    headers = ("turn", "conc", "chat req/s", "exact req/s", "exact/chat req/s",
               "chat server CPU-s/1k", "exact server CPU-s/1k", "exact/chat CPU")  # fmt: skip
    return table(headers, body) if body else ""


def rollouts_table(result: dict[str, Any]) -> str:
    summary = (
        f"{result.get('mode', 'plain')}: {result['finished']}/{result['rollouts']} rollouts, "
        f"{result['num_samples_in_parallel']} in parallel: "
        f"{result['wall_s']:.1f} s, {result['rollouts_per_s']} rollouts/s (mean reward {result['mean_reward']:.2f})"
    )
    rows = [(p["process"], p["cpu_s"], p["cpu_ms_per_rollout"], p["peak_rss_mib"]) for p in result["processes"]]
    return summary + "\n\n" + table(("process", "CPU s", "CPU ms/rollout", "peak RSS MiB"), rows)


def markdown(document: dict[str, Any]) -> str:
    """The run as Markdown, for pasting into benchmarks/README.md."""
    info = document["machine"]
    lines = [
        f"Run {info['date_utc']} at commit {info['git_commit']}: `{document['command']}` ({document['wall_s']:.0f} s)",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, Python {info['python']}, "
        f"Linux {info['kernel']}.",
    ]
    for when in ("load_before", "load_after"):
        snapshot = document[when]
        busy = "; ".join(f"{p['command'][:60]} at {p['cpu_share']:.0%} of a core" for p in snapshot["busy_processes"])
        label = when.replace("load_", "load ")
        lines.append(f"- {label}: load average {' '.join(snapshot['loadavg'])}; other busy processes: {busy or 'none'}")
    if "model_server" in document:
        lines += ["", "### model_server", "", model_server_table(document["model_server"])]
        if ratios := exact_vs_chat_table(document["model_server"]):
            lines += ["", "token-exact path against the chat path (model server):", "", ratios]
    if "rollouts" in document:
        lines += ["", "### rollouts"]
        for result in document["rollouts"]:
            lines += ["", rollouts_table(result)]
    for summary in document.get("profile", []):
        lines += ["", "### profile", "", profile_tables(summary)]
    return "\n".join(lines) + "\n"


def profile_tables(summary: dict[str, Any]) -> str:
    lines = [
        f"model server, {summary['mode']}, {summary.get('turn', 'first')} turn, concurrency {summary['concurrency']}: "
        f"{summary['samples']} samples "
        f"({summary['requests_per_s']:.0f} req/s, {summary['server_cpu_s_per_1000']:.3f} CPU-s/1000 under py-spy)",
    ]
    cpu_ms = summary["server_cpu_s_per_1000"]
    if summary.get("steps"):
        steps = [(f"{100 * e['share']:.1f}%", round(e["share"] * cpu_ms, 3), e["function"]) for e in summary["steps"]]
        lines += ["", "time by step of the request (inclusive; ms = share of the CPU per request):", ""]
        lines.append(table(("share", "ms/request", "step"), steps))
    titles = {"layers": "self time by layer", "self": "self time", "inclusive": "inclusive time (Python frames)"}
    for kind, title in titles.items():
        rows = [(f"{100 * e['share']:.1f}%", e["function"]) for e in summary.get(kind, [])]
        lines += ["", f"{title}:", "", table(("share", "layer" if kind == "layers" else "function (file)"), rows)]
    return "\n".join(lines)
