"""local_vllm_model: ng_run starts vLLM itself (the CPU build, the trained weather policy) from a config.

The seed's flow on it; Ctrl-C, SIGTERM and kill -9 of ng_run each leave no vLLM process; a wrong model path is
one clear error with vLLM's log tail and nothing left running; two instances behind one pool keep sessions on
one instance, and when one is killed mid-run every rollout still finishes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ngym.vllm.process import free_port
from testkit.gym_process import GymProcess, console_script
from testkit.waiting import line_count, wait_until

pytestmark = [pytest.mark.vllm, pytest.mark.spread]  # each test launches its own vLLM

ROOT = Path(__file__).resolve().parents[2]
LOCAL = "responses_api_models/local_vllm_model/configs/weather_policy_cpu.yaml"
WEATHER = "resources_servers/simple_weather/configs/simple_weather.yaml"
SECTION = "policy_model.responses_api_models.local_vllm_model"
COLLECT = (
    "+agent_name=simple_weather_simple_agent",
    "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
)
SERVING = re.compile(r"vLLM (\d+): serving \S+ at http://127\.0\.0\.1:(\d+)/v1")
STARTUP_S = 240.0  # within the test's own limit, so that ng_run's log is shown when it runs out


@pytest.fixture(autouse=True)
def _vllm_installed(vllm_python: Path) -> Path:
    """Skip (locally) or fail (in CI) without the vLLM venv, as the other real-vLLM tests do."""
    return vllm_python


def vllm_pids(port: int) -> list[int]:
    """Every process whose command line serves on `port` (the watchdog, vLLM's API server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"vllm.entrypoints.openai.api_server" in cmdline and str(port).encode() in cmdline:
            found.append(int(entry.name))
    return found


def with_children(pids: list[int]) -> list[int]:
    """`pids` and every process below them (vLLM's engine core renames itself and has no command line to find)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(pids), set(pids)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return sorted(found)


def serving_ports(log: Path) -> dict[int, int]:
    return {int(m.group(1)): int(m.group(2)) for m in SERVING.finditer(log.read_text())}


def wait_gone(pids: list[int], timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
    return alive


def _zombie(pid: int) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True


def test_seed_flow_on_a_launched_vllm_then_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    log = tmp_path / "ng_run.log"
    output = tmp_path / "rollouts.jsonl"
    gym = GymProcess(ROOT, [LOCAL, WEATHER], [f"+run_dir={tmp_path / 'run'}"], log_path=log)
    with gym.start(timeout=STARTUP_S):
        text = log.read_text()
        assert "vLLM 0: loading the weights" in text and "vLLM 0: serving" in text, text
        port = serving_ports(log)[0]
        pids = with_children(vllm_pids(port))
        assert len(pids) >= 3, "the watchdog, vLLM's API server and its engine core run"
        result = gym.collect(*COLLECT, f"+output_jsonl_fpath={output}", "+limit=10")
        assert "expected 10, finished 10, failed 0" in result.stdout, result.stdout + result.stderr
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        assert sum(row["reward"] for row in rows) >= 8  # the policy scores 10/10 greedy; sampling may cost one
    assert gym.process is not None and gym.process.returncode == 0
    assert wait_gone(pids) == [], "vLLM outlived ng_run's Ctrl-C"
    assert (tmp_path / "run" / "policy_model" / "vllm-0.log").stat().st_size > 0, "vLLM's log is kept"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_sigterm_or_kill_9_of_ng_run_leaves_no_vllm(sig: signal.Signals, tmp_path: Path) -> None:
    log = tmp_path / "ng_run.log"
    gym = GymProcess(ROOT, [LOCAL, WEATHER], log_path=log).start(timeout=STARTUP_S)
    assert gym.process is not None
    pids = with_children(vllm_pids(serving_ports(log)[0]))
    assert len(pids) >= 3
    os.kill(gym.process.pid, sig)
    gym.process.wait(timeout=60)
    assert wait_gone(pids) == [], f"vLLM (or its engine core) outlived {sig.name} of ng_run"


def test_a_wrong_model_path_is_one_clear_error_with_vllms_log_and_nothing_left(tmp_path: Path) -> None:
    port = free_port()
    command = [
        console_script("ng_run"),
        f"+config_paths=[{LOCAL}, {WEATHER}]",
        f"++{SECTION}.model=models/no-such-model",
        f"+head_server.port={port}",
        f"+run_dir={tmp_path / 'run'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=STARTUP_S, check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "vLLM 0 failed to start" in text and "models/no-such-model" in text, text
    assert "log tail" in text, "vLLM's own words are shown"
    assert "Traceback (most recent call last)" not in text.split("log tail")[0], "no traceback of ngym's"
    assert not [pid for pid in _all_vllm_pids() if "no-such-model" in _cmdline(pid)], "a vLLM was left running"


def test_two_instances_keep_sessions_and_survive_one_killed_mid_run(tmp_path: Path) -> None:
    log = tmp_path / "ng_run.log"
    output = tmp_path / "rollouts.jsonl"
    overrides = [f"++{SECTION}.num_instances=2", f"+run_dir={tmp_path / 'run'}"]
    with GymProcess(ROOT, [LOCAL, WEATHER], overrides, log_path=log).start(timeout=STARTUP_S) as gym:
        ports = serving_ports(log)
        assert sorted(ports) == [0, 1] and ports[0] != ports[1]
        args = (*COLLECT, f"+output_jsonl_fpath={output}", "+limit=10", "+num_repeats=8", "+num_samples_in_parallel=8")
        collector = gym.collector(*args)
        # Killed once both instances have served (a session on each) and rollouts have finished: the state the
        # test is about, never a length of time.
        served = [tmp_path / "run" / "policy_model" / f"vllm-{index}.log" for index in (0, 1)]
        wait_until(
            lambda: all(_served_a_chat(log) for log in served) and line_count(output) >= 15,
            "both instances serving and 15 rollouts finished",
            timeout=300,
            process=collector,
        )
        for pid in vllm_pids(ports[1]):
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = collector.communicate(timeout=600)
        assert collector.returncode == 0, stdout + stderr
        wait_until(lambda: "vLLM 1 exited" in log.read_text(), "ng_run to report vLLM 1 gone")
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        keys = sorted((row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows)
        assert keys == [(task, rollout) for task in range(10) for rollout in range(8)], "every rollout finished once"
    assert all(_served_a_chat(log) for log in served), "sessions were spread over both instances"


def _served_a_chat(log: Path) -> bool:
    return log.is_file() and "POST /v1/chat/completions" in log.read_text(errors="replace")


def _all_vllm_pids() -> list[int]:
    return [
        int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and "vllm.entrypoints" in _cmdline(int(e.name))
    ]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
