"""NeMo Gym's `gym` command line as its docs show it: `gym env start` with flags, `gym env status --json`,
`gym eval run --no-serve` against the running servers, and `gym eval run` end to end (start, collect, stop).

vLLM is the scripted stand-in (these are about the command line, not about vLLM)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ngym.http.probe import answers
from ngym.vllm.process import free_port
from testkit.gym_process import console_script
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer

ROOT = Path(__file__).resolve().parents[2]
AGENT = "simple_weather_simple_agent"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinServer]:
    with StandinServer(StandinScript(tool_call_mode=True)) as server:
        yield server


def model_flags(standin: StandinServer) -> list[str]:
    return ["--model-type", "vllm_model", "--model-url", standin.base_url, "--model", standin.script.model,
            "--model-api-key", "sk-flag-key"]  # fmt: skip


def gym(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([console_script("gym"), *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=90)  # fmt: skip


def test_env_start_with_flags_then_status_and_a_collection_against_it(standin: StandinServer, tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "gym.log").open("wb")
    command = [console_script("gym"), "env", "start", "--resources-server", "simple_weather", *model_flags(standin),
               f"+head_server.port={port}"]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        status = gym("env", "status", "--json", f"+head_server.port={port}")
        while status.returncode != 0 and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.5)
            status = gym("env", "status", "--json", f"+head_server.port={port}")
        assert status.returncode == 0, (tmp_path / "gym.log").read_text() + status.stderr
        servers = json.loads(status.stdout)
        assert sorted(s["name"] for s in servers) == ["policy_model", "simple_weather", AGENT]
        assert all(s["status"] == "ok" for s in servers)
        output = tmp_path / "out.jsonl"
        collected = gym("eval", "run", "--no-serve", "--agent", AGENT, "--input",
                        "resources_servers/simple_weather/data/example.jsonl", "--output", str(output),
                        "--limit", "3", "--temperature", "0.5", f"+head_server.port={port}")  # fmt: skip
        assert collected.returncode == 0, collected.stderr
        assert len(output.read_text().splitlines()) == 3
        assert {body["temperature"] for body in standin.log.bodies()[-3:]} == {0.5}, "--temperature reached vLLM"
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        log.close()
    assert "sk-flag-key" not in (tmp_path / "gym.log").read_text()


def test_eval_run_starts_the_servers_collects_the_agents_dataset_and_stops(
    standin: StandinServer, tmp_path: Path
) -> None:
    output = tmp_path / "e2e" / "out.jsonl"
    result = gym("eval", "run", "--resources-server", "simple_weather", *model_flags(standin), "--split", "example",
                 "--output", str(output), "--limit", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(row["reward"], float) for row in rows)
    assert "starting the servers" in result.stderr
    table = [line for line in result.stdout.splitlines() if "http://127.0.0.1:" in line]
    ports = [int(line.rsplit(":", 1)[1].split()[0]) for line in table]
    assert len(ports) >= 3 and not any(answers(f"http://127.0.0.1:{port}") for port in ports), result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "run", "+agent_name=x"], "gym eval run: error: --agent x: no such agent"),
        (["env", "start", "--benchmark", "aime24"], "gym env start: error: gym env start: --benchmark selects"),
        (["eval", "run", "--no-serve", "--limt", "3"], "unknown flag --limt"),
    ],
)
def test_mistakes_are_one_clear_line(args: list[str], message: str) -> None:
    result = gym(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
