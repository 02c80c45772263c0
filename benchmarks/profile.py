"""Sample the model server under load with py-spy and list where its CPU time goes.

Needs py-spy (`.venv/bin/pip install py-spy`). Writes the raw collapsed stacks (flamegraph.pl input) and a
summary under benchmarks/results/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.loadgen import LoadSpec, finish_subprocess, start_subprocess
from benchmarks.model_server import MODES, Requests, model_server, run_order
from benchmarks.procs import StandinProcess

ROOT = Path(__file__).resolve().parent.parent
FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
SHORTEN = re.compile(r"^.*?/(site-packages|lib/python3\.\d+)/")


@dataclass(frozen=True)
class Settings:
    concurrency: int = 64
    modes: tuple[str, ...] = tuple(MODES)
    turn: str = "first"  # or "second": the request whose history carries the first turn's answer
    seconds: float = 10.0
    rate_hz: int = 100
    native: bool = True
    top: int = 20
    results_dir: Path = ROOT / "benchmarks" / "results"


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def _frame_key(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    path = SHORTEN.sub("", match["file"]).removeprefix(str(ROOT) + "/")
    return f"{match['name']} ({path})"


# Where a sample's innermost frame lies, by the first matching rule: (layer, pattern on "function (file)").
LAYERS = (
    ("cyclic garbage collector", re.compile(r"^gc_|\(gcmodule\.c\)")),
    ("write syscalls (socket send)", re.compile(r"^(write|writev|sendmsg|send) \(libc")),
    ("read/epoll syscalls", re.compile(r"^(read|readv|recv|recvmsg|epoll_\w+) \(libc")),
    ("other syscalls", re.compile(r"\(libc")),
    ("aiohttp client", re.compile(r"\(aiohttp/|\(yarl/|\(multidict/")),
    ("uvicorn + httptools", re.compile(r"\(uvicorn/|httptools")),
    ("starlette", re.compile(r"\(starlette/")),
    ("ngym conversion", re.compile(r"\(ngym/protocol/")),
    ("ngym http, servers, pool", re.compile(r"\(ngym/")),
    ("vllm_model app", re.compile(r"\(responses_api_models/")),
    ("orjson", re.compile(r"orjson")),
    ("event loop (uvloop, asyncio)", re.compile(r"\(uvloop/|\(asyncio/|\(loop\.c|asynciomodule|\.h\)$|\(core\.c")),
)


def layer_of(key: str) -> str:
    return next((name for name, pattern in LAYERS if pattern.search(key)), "other (interpreter, stdlib)")


# Where a sample lies in vllm_model's request handling, by the first rule that any of its frames matches:
# (step, pattern on "function (file)"). Inclusive, so each step holds all it calls.
STEPS = (
    ("upstream calls (post_json: body dumps, aiohttp request + response)", re.compile(r"^post_json \(responses_api")),
    ("reading vLLM's answers (answer_json)", re.compile(r"^answer_json \(responses_api")),
    (
        "token data (ngym/protocol tokens, splice, token_endpoints)",
        re.compile(r"\(ngym/protocol/(tokens|splice|token_)"),
    ),
    ("rest of the handler (conversion both ways, the response)", re.compile(r"^VllmModel\.")),
)
OUTSIDE_HANDLER = "outside the handler (inbound HTTP, event loop, socket I/O)"


def step_of(frames: list[str]) -> str:
    return next((name for name, pattern in STEPS if any(pattern.search(f) for f in frames)), OUTSIDE_HANDLER)


def summarize(raw: str, top: int) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and self time per layer, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_key(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        steps[step_of(frames)] += count
        # Inclusive time is told for Python functions only; native frames repeat the event loop's C internals.
        for key in {f for f in frames if f.endswith(".py)")}:
            inclusive[key] += count
    layers: Counter[str] = Counter()
    for key, count in own.items():
        layers[layer_of(key)] += count

    def ranked(counter: Counter[str], limit: int | None = top) -> list[dict[str, Any]]:
        return [{"function": k, "share": round(v / total, 4), "samples": v} for k, v in counter.most_common(limit)]

    # The frames every sample passes through (runpy, the launcher) say nothing: left out.
    for key in [key for key, count in inclusive.items() if count >= 0.9 * total]:
        del inclusive[key]
    return {
        "samples": total,
        "steps": ranked(steps, None),
        "layers": ranked(layers, None),
        "self": ranked(own),
        "inclusive": ranked(inclusive),
    }


def _record(pid: int, out: Path, settings: Settings) -> None:
    args = [py_spy(), "record", "-p", str(pid), "-d", str(int(settings.seconds)), "-r", str(settings.rate_hz),
            "-f", "raw", "-o", str(out)]  # fmt: skip
    # Blocking mode (the default) pauses the server for each sample: --nonblocking reads torn stacks.
    if settings.native:
        args.append("--native")
    subprocess.run(args, check=True, capture_output=True, timeout=settings.seconds + 60)


def run(settings: Settings, log: Any = print) -> list[dict[str, Any]]:
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    requests = Requests()
    summaries: list[dict[str, Any]] = []
    with StandinProcess(log_path=settings.results_dir / "standin.log") as standin:
        for mode in run_order(settings.modes):
            log_path = settings.results_dir / f"ng_run-profile-{mode}.log"
            with model_server(standin, MODES[mode], log_path) as (url, pid):
                request = orjson.dumps(requests.checked(url + "/v1/responses", MODES[mode])[settings.turn])
                warmup = 2.0
                spec = LoadSpec(url + "/v1/responses", request, settings.concurrency, warmup, settings.seconds + 2,
                                {"server": pid, "standin": standin.pid})  # fmt: skip
                load = start_subprocess(spec, settings.results_dir / "loadgen-body.json")
                time.sleep(warmup + 0.5)
                raw_path = settings.results_dir / f"profile-{mode}-{settings.turn}-c{settings.concurrency}.raw"
                _record(pid, raw_path, settings)
                result = finish_subprocess(load, spec)
                summary = summarize(raw_path.read_text(), settings.top)
                summary.update(mode=mode, turn=settings.turn, concurrency=settings.concurrency,
                               raw=str(raw_path.relative_to(ROOT)),
                               requests_per_s=round(result.requests_per_s, 1),
                               server_cpu_s_per_1000=round(result.cpu_s_per_1000("server"), 4))  # fmt: skip
                summaries.append(summary)
                log(f"  profiled {mode} ({settings.turn} turn) at c={settings.concurrency}: "
                    f"{summary['samples']} samples, {summary['requests_per_s']:.0f} req/s under py-spy")  # fmt: skip
    return summaries
