"""Closed-loop HTTP load generator, run as its own process: `python -m benchmarks.loadgen --url URL ...`.

`concurrency` virtual sessions each send one POST after another over a keep-alive pool of exactly
`concurrency` connections, and keep their own cookies as an agent does. After `warmup` seconds the
measurement window of `duration` seconds opens: requests completed inside it are counted, and the CPU
seconds of the watched processes are read at its two edges. Every session stops starting requests when
the window closes, so the run ends by itself. The result is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import uvloop

from benchmarks.procs import tree_cpu_seconds

JSON_HEADERS = {"Content-Type": "application/json"}
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LoadSpec:
    url: str
    body: bytes
    concurrency: int
    warmup_s: float
    duration_s: float
    watch: dict[str, int] = field(default_factory=dict)  # label -> pid whose CPU time is measured
    request_timeout_s: float = 60.0


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    completed: int
    errors: int
    first_error: str | None
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: dict[str, float]  # label -> CPU seconds inside the window ("loadgen" is this process)

    def cpu_s_per_1000(self, label: str) -> float:
        return 1000 * self.cpu_s[label] / self.completed if self.completed else float("nan")


class _Window:
    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end
        self.latencies = array("d")
        self.errors = 0
        self.first_error: str | None = None

    def error(self, text: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = text[:300]


def _cookie_header(jar: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in jar.items())


async def _session(http: aiohttp.ClientSession, spec: LoadSpec, window: _Window) -> None:
    """One virtual agent session: requests back to back, its own cookies, until the window closes."""
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    jar: dict[str, str] = {}
    headers = dict(JSON_HEADERS)
    while (sent := clock()) < window.end:
        try:
            async with http.post(spec.url, data=spec.body, headers=headers) as resp:
                await resp.read()
                status = resp.status
                for cookie in resp.headers.getall("Set-Cookie", ()):
                    name, _, rest = cookie.partition("=")
                    jar[name.strip()] = rest.split(";", 1)[0]
                    headers["Cookie"] = _cookie_header(jar)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if clock() >= window.start:
                window.error(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.05)
            continue
        done = clock()
        if window.start <= done <= window.end:
            if status == 200:
                window.latencies.append(done - sent)
            else:
                window.error(f"HTTP {status}")


def _percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _cpu_sample(watch: dict[str, int]) -> dict[str, float]:
    sample = {label: tree_cpu_seconds(pid) for label, pid in watch.items()}
    times = os.times()
    sample["loadgen"] = times.user + times.system
    return sample


async def run_load(spec: LoadSpec) -> LoadResult:
    start = time.perf_counter() + spec.warmup_s
    window = _Window(start, start + spec.duration_s)
    samples: list[dict[str, float]] = []

    async def sample_at(when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.perf_counter()))
        samples.append(_cpu_sample(spec.watch))

    connector = aiohttp.TCPConnector(
        limit=spec.concurrency, limit_per_host=spec.concurrency, keepalive_timeout=75, ttl_dns_cache=None
    )
    timeout = aiohttp.ClientTimeout(total=spec.request_timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",)
    ) as http:
        await asyncio.gather(
            sample_at(window.start),
            sample_at(window.end),
            *(_session(http, spec, window) for _ in range(spec.concurrency)),
        )
    ordered = sorted(window.latencies)
    return LoadResult(
        concurrency=spec.concurrency,
        duration_s=spec.duration_s,
        completed=len(ordered),
        errors=window.errors,
        first_error=window.first_error,
        requests_per_s=len(ordered) / spec.duration_s,
        p50_ms=1000 * _percentile(ordered, 0.50),
        p99_ms=1000 * _percentile(ordered, 0.99),
        max_ms=1000 * ordered[-1] if ordered else float("nan"),
        cpu_s={label: samples[1][label] - samples[0][label] for label in samples[0]},
    )


def start_subprocess(spec: LoadSpec, body_path: Path) -> subprocess.Popen[str]:
    """Start one load point in a fresh `python -m benchmarks.loadgen` process; see finish_subprocess."""
    body_path.write_bytes(spec.body)
    args = [
        sys.executable, "-m", "benchmarks.loadgen",
        "--url", spec.url,
        "--body-file", str(body_path),
        "--concurrency", str(spec.concurrency),
        "--warmup", str(spec.warmup_s),
        "--duration", str(spec.duration_s),
        "--timeout", str(spec.request_timeout_s),
        *(arg for label, pid in spec.watch.items() for arg in ("--watch", f"{label}={pid}")),
    ]  # fmt: skip
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_subprocess(process: subprocess.Popen[str], spec: LoadSpec) -> LoadResult:
    limit = spec.warmup_s + spec.duration_s + spec.request_timeout_s + 30
    try:
        stdout, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError(f"load generator did not finish within {limit:g} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"load generator exited {process.returncode}:\n{stderr[-3000:]}")
    return LoadResult(**json.loads(stdout))


def run_in_subprocess(spec: LoadSpec, body_path: Path) -> LoadResult:
    """Run one load point in its own process and return its result."""
    return finish_subprocess(start_subprocess(spec, body_path), spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--body-file", required=True, type=Path)
    parser.add_argument("--concurrency", required=True, type=int)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--watch", action="append", default=[], help="LABEL=PID whose CPU time to measure")
    args = parser.parse_args(argv)
    watch = {label: int(pid) for label, _, pid in (item.partition("=") for item in args.watch)}
    spec = LoadSpec(
        url=args.url,
        body=args.body_file.read_bytes(),
        concurrency=args.concurrency,
        warmup_s=args.warmup,
        duration_s=args.duration,
        watch=watch,
        request_timeout_s=args.timeout,
    )
    started = time.monotonic()
    result = uvloop.run(run_load(spec))
    print(json.dumps(asdict(result)))
    print(f"loadgen: done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
