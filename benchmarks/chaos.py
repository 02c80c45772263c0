"""Chaos at scale: a collection of thousands of rollouts while kill -9s hit random servers at random moments,
with no pause (unlike tests/integration/test_chaos_local.py, which kills at states so that it can assert on each
kill). Two replicas of every server kind (agent, resources, model), a vLLM stand-in in its own process.

What it checks and reports: every rollout ends exactly once (in the output, or in the failures file with an
infrastructure class, never `invalid_task`); ng_run still serves every replica at its URL after the last kill;
the same command run again completes every failed rollout; Ctrl-C leaves no process behind. Figures: rollouts,
kills, failures by class, rollouts/s with the kills, and what the rerun had to do.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.procs import StandinProcess
from ngym.http.probe import answers
from ngym.rollouts.output import failures_path
from testkit.chaos import Accounting
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess
from testkit.waiting import pid_alive

ROOT = Path(__file__).resolve().parents[1]
KINDS = {
    "policy_model": "policy_model.responses_api_models.vllm_model",
    "simple_weather": "simple_weather.resources_servers.simple_weather",
    "simple_weather_simple_agent": "simple_weather_simple_agent.responses_api_agents.simple_agent",
}
EXAMPLE_TASKS = 10  # rows of simple_weather's example.jsonl


@dataclass(frozen=True)
class Settings:
    rollouts: int = 3000
    kills: int = 30
    parallel: int = 64
    seed: int = 20261205
    work_dir: Path = ROOT / "benchmarks" / "results" / "chaos"


def _killer(gym: GymProcess, settings: Settings, done: threading.Event, killed: list[str], pids: set[int]) -> None:
    """kill -9 a random replica at random moments (0.05-0.5 s apart) until the kills are spent or the run ends."""
    chance = random.Random(settings.seed)
    while len(killed) < settings.kills and not done.wait(chance.uniform(0.05, 0.5)):
        try:
            victims = [replica for replica in gym.replicas().values() if replica.get("pid")]
        except OSError:
            continue
        victim = chance.choice(sorted(victims, key=lambda replica: str(replica["label"])))
        pids.add(int(victim["pid"]))
        try:
            os.kill(int(victim["pid"]), signal.SIGKILL)
        except ProcessLookupError:
            continue  # already dead and restarting: not a kill
        killed.append(str(victim["label"]))


def _collect(gym: GymProcess, output: Path, settings: Settings) -> tuple[subprocess.CompletedProcess[str], float]:
    repeats = -(-settings.rollouts // EXAMPLE_TASKS)
    started = time.monotonic()
    result = gym.collect(
        "+agent_name=simple_weather_simple_agent",
        "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
        f"+num_repeats={repeats}",
        f"+num_samples_in_parallel={settings.parallel}",
        "+max_attempts=5",
        "+max_consecutive_failures=100000",
        check=False,
        timeout=3600,
    )
    return result, time.monotonic() - started


def run(settings: Settings, log: Any = print) -> dict[str, Any]:
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    output = settings.work_dir / "out.jsonl"
    for stale in (output, failures_path(output), settings.work_dir / "out.summary.json"):
        stale.unlink(missing_ok=True)
    killed: list[str] = []
    pids: set[int] = set()
    problems: list[str] = []
    with StandinProcess(tool_call_mode=True, log_path=settings.work_dir / "standin.log") as standin:
        overrides = [
            f"++policy_base_url={standin.base_url}",
            "++policy_api_key=x",
            "++policy_model_name=tiny-qwen2",
            *(f"++{key}.num_replicas=2" for key in KINDS.values()),
            *(f"++{key}.max_restarts=-1" for key in KINDS.values()),
        ]
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=settings.work_dir / "ng_run.log") as gym:
            urls = sorted(str(replica["url"]) for replica in gym.replicas().values())
            pids |= {int(replica["pid"]) for replica in gym.replicas().values()}
            done = threading.Event()
            killer = threading.Thread(target=_killer, args=(gym, settings, done, killed, pids), daemon=True)
            killer.start()
            first, seconds = _collect(gym, output, settings)
            done.set()
            killer.join()
            log(f"  collected with {len(killed)} kills in {seconds:.1f} s (exit {first.returncode})")
            wanted = {(t, r) for t in range(EXAMPLE_TASKS) for r in range(-(-settings.rollouts // EXAMPLE_TASKS))}
            files = Accounting.read(output)
            finished, failed = files.finished, files.failed
            problems += files.problems(wanted)
            classes = Counter(str(row["class"]) for row in failed)
            reasons = Counter(f"{row['class']}: {str(row['error'])[:120]}" for row in failed).most_common(5)
            # The last victim may still be restarting: every replica must answer again (two minutes at most).
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(answers(url) for url in urls):
                time.sleep(0.2)
            now = sorted(str(replica["url"]) for replica in gym.replicas().values())
            if now != urls or not all(answers(url) for url in urls):
                problems.append("a replica moved or does not answer after the kills")
            pids |= {int(replica["pid"]) for replica in gym.replicas().values()}
            rerun, rerun_s = _collect(gym, output, settings)
            after = Accounting.read(output).finished
            if len(after) != len(wanted) or rerun.returncode != 0:
                problems.append(f"the rerun did not complete every rollout ({len(after)} of {len(wanted)})")
            gym.stop()
    left = [pid for pid in pids if pid_alive(pid)]
    if left:
        problems.append(f"processes left behind: {left}")
    return {
        "rollouts": len(wanted),
        "kills": len(killed),
        "killed": dict(Counter(label.split("#")[0] for label in killed)),
        "finished_first": len(finished),
        "failed_first": dict(classes),
        "failure_reasons": reasons,
        "rollouts_per_s": round(len(finished) / seconds, 1) if seconds else None,
        "rerun_completed": len(after) - len(finished),
        "rerun_s": round(rerun_s, 1),
        "problems": problems,
        "seed": settings.seed,
    }


def report(result: dict[str, Any]) -> str:
    verdict = "no problem" if not result["problems"] else "PROBLEMS: " + "; ".join(result["problems"])
    return (
        f"{result['rollouts']} rollouts, {result['kills']} kill -9s ({result['killed']}), seed {result['seed']}: "
        f"{result['finished_first']} finished on the first run at {result['rollouts_per_s']} rollouts/s, failed "
        f"{result['failed_first'] or 'none'}; the rerun completed {result['rerun_completed']} in "
        f"{result['rerun_s']} s; {verdict}"
    )


if __name__ == "__main__":
    print(report(run(Settings())), file=sys.stderr)
