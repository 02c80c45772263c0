"""The progress file as a trainer or a dashboard reads it, beside a real ng_collect_rollouts' output while the
run goes: ten rollouts done and four held in flight, rewritten while nothing moves, then "stopped" by Ctrl-C with
the counts of the files, and the resumed run "finished" with the earlier rows counted as done.

vLLM is the scripted stand-in; its Hold fault keeps the run half-way for as long as the test reads."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from ngym.rollouts.output import failures_path
from ngym.rollouts.progress import progress_path
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess
from testkit.standin.script import Delay, Hold, StandinScript
from testkit.standin.server import StandinServer
from testkit.waiting import line_count, wait_until

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "schema", "version", "state", "pid", "output", "started_at", "updated_at", "elapsed_s", "expected", "done",
    "resumed", "finished", "failed", "failed_by_class", "in_flight", "remaining", "rate", "reward", "eta_s",
}  # fmt: skip


def env(standin: StandinServer) -> list[str]:
    return [
        f"++policy_base_url={standin.base_url}",
        "++policy_api_key=sk-do-not-print",
        f"++policy_model_name={standin.script.model}",
    ]


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes()) if path.is_file() else {}


def test_the_progress_file_is_read_while_the_run_goes_and_tells_the_stop_and_the_resume(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    progress = progress_path(output)
    args = [
        "+agent_name=simple_weather_simple_agent",
        "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
        "+limit=10",
        "+num_repeats=4",
        "+num_samples_in_parallel=4",
        "+progress_interval_s=0.2",
    ]
    with StandinServer(StandinScript()) as standin, GymProcess(ROOT, SEED_CONFIG_PATHS, env(standin),
                                                              log_path=tmp_path / "ng_run.log") as gym:  # fmt: skip
        # One model call a rollout: ten pass, then every call is held, so the run stays at ten done, four in flight.
        hold = Hold()
        standin.script.inject(*[Delay(0.0)] * 10, *[hold] * 100)
        collector = gym.collector(*args)
        wait_until(lambda: read(progress).get("done") == 10 and read(progress).get("in_flight") == 4,
                   "the file showing 10 done and 4 in flight", process=collector)  # fmt: skip
        hold.wait_for_held(4)
        held = read(progress)
        assert set(held) == KEYS
        assert (held["schema"], held["version"], held["state"]) == ("ngym.collect_progress", 1, "running")
        assert (held["pid"], held["output"]) == (collector.pid, str(output))
        assert (held["expected"], held["resumed"], held["finished"], held["failed"]) == (40, 0, 10, 0)
        assert held["remaining"] == 30 and held["reward"]["count"] == 10
        assert held["rate"]["overall"] > 0
        wait_until(lambda: read(progress)["updated_at"] > held["updated_at"], "the file rewritten while held",
                   process=collector)  # fmt: skip
        assert line_count(output) == 10

        collector.send_signal(signal.SIGINT)
        stdout, stderr = collector.communicate(timeout=60)
        standin.script.faults.clear()
        hold.release()
        stopped = read(progress)
        assert stopped["state"] == "stopped", stderr
        assert (stopped["done"], stopped["failed"], stopped["in_flight"], stopped["remaining"]) == (10, 0, 0, 30)
        assert stopped["done"] == line_count(output) and line_count(failures_path(output)) == 0
        assert f"finished {stopped['done']}," in stdout
        assert "sk-do-not-print" not in progress.read_text()

        gym.collect(*args)
    finished = read(progress)
    assert (finished["state"], finished["resumed"], finished["finished"], finished["done"]) == ("finished", 10, 30, 40)
    assert finished["done"] == line_count(output) and finished["eta_s"] == 0
    summary = json.loads(output.with_name("out.summary.json").read_bytes())
    assert finished["reward"] == {"mean": summary["fields"]["reward"]["mean"], "count": 40}
    assert not list(tmp_path.glob(".*.tmp"))
