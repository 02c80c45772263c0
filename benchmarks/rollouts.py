"""The whole path: ng_collect_rollouts -> simple_agent -> model server -> stand-in (tool-call mode), and
simple_weather for the tool and the verifier; rollouts/s and CPU seconds per rollout of every process."""

from __future__ import annotations

import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.model_server import MODES, gym_overrides
from benchmarks.procs import StandinProcess, cpu_seconds, instance_pids, peak_rss_mib, tree_cpu_seconds
from testkit.gym_process import GymProcess

ROOT = Path(__file__).resolve().parent.parent
RESOURCES_CONFIG = "resources_servers/simple_weather/configs/simple_weather.yaml"
AGENT = "simple_weather_simple_agent"
HEAD = "ng_run (head)"
INPUT = "resources_servers/simple_weather/data/example.jsonl"
SUMMARY_LINE = re.compile(r"wall time ([\d.]+) s, ([\d.]+) rollouts/s")


@dataclass(frozen=True)
class Settings:
    rollouts: int = 2000
    warmup_rollouts: int = 100
    parallel: int = 64  # ng_collect_rollouts' default num_samples_in_parallel
    mode: str = "plain"  # a model_server mode: plain, token_info (chat path), token_exact (exact path)
    results_dir: Path = ROOT / "benchmarks" / "results"


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    """Each server's CPU seconds; ng_run's alone, without the servers that are its children."""
    return {name: cpu_seconds(pid) if name == HEAD else tree_cpu_seconds(pid) for name, pid in pids.items()}


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tasks(output: Path, count: int) -> Path:
    """`count` task rows, the example's rows over and over (+limit only takes a file's first rows)."""
    examples = [line for line in (ROOT / INPUT).read_bytes().splitlines() if line.strip()]
    path = output.with_name(output.stem + ".tasks.jsonl")
    path.write_bytes(b"".join(examples[i % len(examples)] + b"\n" for i in range(count)))
    return path


def _collect(gym: GymProcess, output: Path, count: int, parallel: int) -> tuple[float, str]:
    """Run ng_collect_rollouts on `count` tasks; returns its CPU seconds and its stdout."""
    tasks = _tasks(output, count)
    before = _children_cpu_seconds()
    done = gym.collect(
        f"+agent_name={AGENT}",
        f"+input_jsonl_fpath={tasks.relative_to(ROOT)}",
        f"+output_jsonl_fpath={output.relative_to(ROOT)}",
        f"+num_samples_in_parallel={parallel}",
        "+overwrite=true",
    )
    return _children_cpu_seconds() - before, done.stdout


def _rewards(output: Path) -> tuple[int, float]:
    rewards = [float(orjson.loads(line)["reward"]) for line in output.read_bytes().splitlines() if line.strip()]
    return len(rewards), sum(rewards) / len(rewards) if rewards else float("nan")


def run(settings: Settings, log: Any = print) -> dict[str, Any]:
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    output = settings.results_dir / f"rollouts-{settings.mode}.jsonl"
    mode = MODES[settings.mode]
    with StandinProcess(tool_call_mode=True, log_path=settings.results_dir / "standin-tools.log") as standin:
        log_path = settings.results_dir / f"ng_run-rollouts-{settings.mode}.log"
        overrides = [*gym_overrides(standin), *mode.overrides]
        with GymProcess(ROOT, (mode.config_path, RESOURCES_CONFIG), overrides, log_path=log_path) as gym:
            assert gym.process is not None
            pids = {**instance_pids(gym.process.pid), HEAD: gym.process.pid, "vllm stand-in": standin.pid}
            _collect(gym, settings.results_dir / "rollouts-warmup.jsonl", settings.warmup_rollouts, settings.parallel)
            cpu_before = _cpu(pids)
            started = time.monotonic()
            collect_cpu, stdout = _collect(gym, output, settings.rollouts, settings.parallel)
            wall = time.monotonic() - started
            cpu = {name: seconds - cpu_before[name] for name, seconds in _cpu(pids).items()}
            rss = {name: peak_rss_mib(pid) for name, pid in pids.items()}
    cpu["ng_collect_rollouts"] = collect_cpu
    finished, mean_reward = _rewards(output)
    match = SUMMARY_LINE.search(stdout)
    collect_wall = float(match.group(1)) if match else wall
    processes = [
        {
            "process": name,
            "cpu_s": round(seconds, 3),
            "cpu_ms_per_rollout": round(1000 * seconds / finished, 4) if finished else None,
            "peak_rss_mib": round(rss[name], 1) if name in rss else None,
        }
        for name, seconds in cpu.items()
    ]
    result = {
        "mode": settings.mode,
        "rollouts": settings.rollouts,
        "finished": finished,
        "mean_reward": mean_reward,
        "num_samples_in_parallel": settings.parallel,
        "wall_s": round(collect_wall, 3),
        "wall_s_with_cli_start": round(wall, 3),
        "rollouts_per_s": round(finished / collect_wall, 1) if collect_wall else None,
        "processes": processes,
    }
    log(f"  {settings.mode}: {finished} rollouts in {collect_wall:.1f} s: {result['rollouts_per_s']} rollouts/s")
    return result
