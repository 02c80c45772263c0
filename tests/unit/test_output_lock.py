"""One output, one collector: a second run on an output that a run is writing fails at once, naming that run,
with nothing written or deleted; the lock goes with its process, however it ends."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ngym.config.errors import ConfigError
from ngym.rollouts.collect import CollectPlan, collect
from ngym.rollouts.output import failures_path
from ngym.rollouts.output_lock import OutputLock, lock_path
from ngym.rollouts.tasks import TaskSource
from testkit.gym_process import console_script

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys
from pathlib import Path
from ngym.rollouts.output_lock import OutputLock
lock = OutputLock.acquire(Path(sys.argv[1]), "ng_collect_rollouts")
print("held", flush=True)
sys.stdin.read()  # until the test closes stdin (or kills this process)
lock.release()
"""


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """An output a run already wrote to: a row and a failure."""
    path = tmp_path / "results" / "out.jsonl"
    path.parent.mkdir()
    path.write_bytes(b'{"_ng_task_index": 0, "_ng_rollout_index": 0, "reward": 1.0}\n')
    failures_path(path).write_bytes(b'{"_ng_task_index": 1, "_ng_rollout_index": 0, "class": "model"}\n')
    return path


def held_by_another_process(output: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(output)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"  # the lock is held from here on
    return holder


def contents(output: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(output.parent.iterdir())}


def test_a_second_lock_names_the_run_that_holds_the_output(output: Path) -> None:
    with OutputLock.acquire(output, "gym eval run"):
        with pytest.raises(ConfigError) as refused:
            OutputLock.acquire(output, "ng_collect_rollouts")
        assert str(output) in str(refused.value)
        assert f"gym eval run, pid {os.getpid()}" in str(refused.value)
    assert not lock_path(output).exists()  # released and removed
    OutputLock.acquire(output, "ng_collect_rollouts").release()


def test_the_lock_goes_with_its_process_even_when_killed(output: Path) -> None:
    holder = held_by_another_process(output)
    with pytest.raises(ConfigError, match=rf"pid {holder.pid}"):
        OutputLock.acquire(output, "ng_collect_rollouts")
    holder.kill()
    holder.wait()
    OutputLock.acquire(output, "ng_collect_rollouts").release()  # no stale lock to clear by hand


async def test_collect_on_a_locked_output_writes_and_deletes_nothing(output: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(orjson.dumps({"responses_create_params": {"input": "hi"}}) + b"\n")
    before = contents(output)
    holder = held_by_another_process(output)
    try:
        plan = CollectPlan({"agent": "http://127.0.0.1:9"}, TaskSource(tasks, agent_name="agent"), output,
                           overwrite=True)  # fmt: skip
        with pytest.raises(
            ConfigError, match=rf"is being written by another run \(ng_collect_rollouts, pid {holder.pid}"
        ):
            await collect(plan, io.StringIO())
        assert contents(output) == {**before, lock_path(output).name: lock_path(output).read_bytes()}
    finally:
        holder.communicate("")
    assert contents(output) == before


@pytest.mark.parametrize("command", ["ng_collect_rollouts", "gym"])
def test_a_second_command_on_the_output_fails_at_once(output: Path, tmp_path: Path, command: str) -> None:
    """Before looking for ng_run (ng_collect_rollouts) or starting one (gym eval run)."""
    inputs = ROOT / "resources_servers/simple_weather/data/example.jsonl"
    if command == "gym":
        args = ["eval", "run", "--agent", "simple_weather_simple_agent", "--input", str(inputs), "--output",
                str(output), "--model-url", "http://127.0.0.1:9/v1", "--model", "m", "--resources-server",
                "simple_weather", "--model-type", "vllm_model", "--model-api-key", "none"]  # fmt: skip
    else:
        args = ["+agent_name=simple_weather_simple_agent", f"+input_jsonl_fpath={inputs}",
                f"+output_jsonl_fpath={output}", "+head_server.port=9"]  # fmt: skip
    before = contents(output)
    holder = held_by_another_process(output)
    try:
        result = subprocess.run([console_script(command), *args], cwd=ROOT, capture_output=True, text=True,
                                check=False, timeout=120)  # fmt: skip
    finally:
        holder.communicate("")
    assert result.returncode != 0
    assert f"is being written by another run (ng_collect_rollouts, pid {holder.pid}" in result.stderr
    assert "starting the servers" not in result.stderr
    assert contents(output) == before
