"""A local replica that dies comes back on its own port, within its `max_restarts` (issue 24).

vLLM is the scripted stand-in; every wait is for a state (a line printed, requests held, a process gone)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from ngym.http.probe import answers
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess, console_script
from testkit.standin.script import Delay, Hold, StandinScript
from testkit.standin.server import StandinServer
from testkit.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
WEATHER = "simple_weather.resources_servers.simple_weather"
RESTARTED = re.compile(r"ng_run: (\S+) \(\S+\) restarted at (\S+) \(pid (\d+), restart (\d+) of")


def settings(standin: StandinServer, *more: str) -> list[str]:
    return [
        f"++policy_base_url={standin.base_url}",
        "++policy_api_key=x",
        f"++policy_model_name={standin.script.model}",
        *more,
    ]


def table_pid(log: Path, label: str) -> int:
    """The pid the servers table shows for `label`."""
    return next(int(line.split()[-1]) for line in log.read_text().splitlines() if line.startswith(f"{label} "))


def restarts(log: Path) -> list[tuple[str, str, int, int]]:
    """Every `restarted at` line: (replica, url, new pid, restart number)."""
    return [(m[1], m[2], int(m[3]), int(m[4])) for m in RESTARTED.finditer(log.read_text())]


def keys(path: Path) -> list[tuple[int, int]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [(row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows]


def counts(stdout: str) -> dict[str, int]:
    found = re.search(r"rollouts: expected (\d+), finished (\d+).*?, failed (\d+).*?, missing (\d+)", stdout)
    assert found, stdout
    return dict(zip(("expected", "finished", "failed", "missing"), map(int, found.groups()), strict=True))


def test_a_killed_resources_replica_restarts_on_its_port_and_the_collection_loses_nothing(tmp_path: Path) -> None:
    log, output = tmp_path / "ng_run.log", tmp_path / "out.jsonl"
    failures = tmp_path / "out.jsonl.failures.jsonl"
    args = [
        "+agent_name=simple_weather_simple_agent",
        "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
        "+num_repeats=20",
        "+num_samples_in_parallel=8",
    ]
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        overrides = settings(standin, f"++{WEATHER}.num_replicas=2")
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=log) as gym:
            before = next(s for s in gym.servers() if s["name"] == "simple_weather")["urls"]
            victim = table_pid(log, "simple_weather#0")
            # Twenty model calls pass, then eight are held: the collection is under way, eight rollouts in flight.
            hold = Hold()
            standin.script.inject(*[Delay(0.0)] * 20, *[hold] * 8)
            collector = gym.collector(*args)
            try:
                hold.wait_for_held(8)
                os.kill(victim, signal.SIGKILL)
                wait_until(lambda: restarts(log), "simple_weather#0 restarted", process=collector)
            finally:
                hold.release()
            stdout, stderr = collector.communicate(timeout=300)
            assert collector.returncode in (0, 3), stdout + stderr
            (label, url, pid, number), *_ = restarts(log)
            assert (label, url, number) == ("simple_weather#0", before[0], 1) and pid != victim
            weather = next(s for s in gym.servers() if s["name"] == "simple_weather")
            assert weather["urls"] == before and answers(url)
            replica = weather["replicas"][0]
            assert (replica["pid"], replica["restarts"], replica["last_exit"]) == (pid, 1, "killed by signal SIGKILL")
            status = subprocess.run([console_script("ng_status"), f"+head_server.port={gym.head_port}"], cwd=ROOT,
                                    capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
            assert status.returncode == 0, status.stdout + status.stderr
            assert (
                f"simple_weather#0 at {url} restarted 1 time(s), last after killed by signal SIGKILL" in status.stdout
            )
            first = counts(stdout)
            done, failed = keys(output), keys(failures)
            assert first["expected"] == 200 and first["missing"] == 0
            assert first["finished"] + first["failed"] == first["expected"]
            assert len(done) == len(set(done)) == first["finished"]
            assert len(failed) == first["failed"] and not set(done) & set(failed)
            again = gym.collect(*args)  # the same command collects what failed, and only that
            assert f"(+{first['finished']} from earlier runs)" in again.stdout
        text = log.read_text()
    assert "simple_weather#0 (resources_servers/simple_weather) exited unexpectedly (killed by signal SIGKILL)" in text
    assert f"restarting it on {before[0]}" in text and "(restart 1 of 3)" in text
    final = keys(output)
    assert sorted(final) == [(task, rollout) for task in range(10) for rollout in range(20)]


def test_a_replica_that_dies_past_its_budget_stops_ng_run_with_its_last_output(tmp_path: Path) -> None:
    log = tmp_path / "ng_run.log"
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        gym = GymProcess(ROOT, SEED_CONFIG_PATHS, settings(standin, f"++{WEATHER}.max_restarts=1"), log_path=log)
        with gym:
            assert gym.process is not None
            urls = [server["url"] for server in gym.servers()]
            os.kill(table_pid(log, "simple_weather"), signal.SIGKILL)
            wait_until(lambda: restarts(log), "simple_weather restarted", timeout=120)
            (_, url, pid, _), *_ = restarts(log)
            assert url == gym.url_of("simple_weather") and answers(url)
            os.kill(pid, signal.SIGKILL)
            assert gym.process.wait(60) == 1
    text = log.read_text()
    assert (
        "ng_run: simple_weather (resources_servers/simple_weather) exited unexpectedly (killed by signal SIGKILL) "
        "after 1 of 1 restarts (max_restarts); stopping everything. Its last output:\n    | "
    ) in text
    assert not any(answers(url) for url in urls)


def test_ctrl_c_while_a_replica_restarts_stops_everything_and_leaves_nothing_behind(tmp_path: Path) -> None:
    log = tmp_path / "ng_run.log"
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        gym = GymProcess(ROOT, SEED_CONFIG_PATHS, settings(standin), log_path=log).start()
        assert gym.process is not None
        pids = [replica["pid"] for replica in gym.replicas().values()]
        urls = [server["url"] for server in gym.servers()]
        os.kill(table_pid(log, "simple_weather"), signal.SIGKILL)
        wait_until(lambda: "restarting it on" in log.read_text(), "the restart announced")
        assert gym.stop() == 0
    text = log.read_text()
    new_pids = [pid for _, _, pid, _ in restarts(log)]
    assert "ng_run: stopping every server" in text
    assert not any(answers(url) for url in urls)
    for pid in [*pids, *new_pids]:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"pid {pid} is still running after Ctrl-C:\n{text}")
