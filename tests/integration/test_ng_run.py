"""ng_run as a user runs it: start-up checks, the servers table, supervision, and clean stops.

vLLM is the scripted stand-in here (these are about process handling, not about vLLM)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path

import aiohttp
import pytest

from ngym.http.probe import answers
from ngym.vllm.process import free_port
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess, console_script
from testkit.standin.script import Delay, DropConnection, Hold, StandinScript
from testkit.standin.server import StandinServer
from testkit.waiting import pid_alive, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinServer]:
    with StandinServer(StandinScript(tool_call_mode=True)) as server:
        yield server


def env(standin: StandinServer, model: str | None = None) -> list[str]:
    return [
        f"++policy_base_url={standin.base_url}",
        "++policy_api_key=sk-do-not-print",
        f"++policy_model_name={model or standin.script.model}",
    ]


def server_pids(log: str) -> list[int]:
    """The pid column of ng_run's servers table."""
    return [int(line.split()[-1]) for line in log.splitlines() if line.split() and line.split()[-1].isdigit()]


def test_table_then_ctrl_c_stops_every_server(standin: StandinServer, tmp_path: Path) -> None:
    log = tmp_path / "ng_run.log"
    gym = GymProcess(ROOT, SEED_CONFIG_PATHS, env(standin), log_path=log).start()
    urls = [server["url"] for server in gym.servers()]
    assert len(urls) == 3 and all(answers(url) for url in urls)
    text = log.read_text()
    for name in ("policy_model", "simple_weather", "simple_weather_simple_agent", "head_server"):
        assert name in text
    pids = server_pids(text)
    assert len(pids) == 4
    status = subprocess.run([console_script("ng_status"), f"+head_server.port={gym.head_port}"], cwd=ROOT,
                            capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert status.returncode == 0 and status.stdout.count(" ok") == 3, status.stdout
    assert gym.stop() == 0
    assert not any(answers(url) for url in urls)
    assert not any(pid_alive(pid) for pid in pids if pid != gym.process.pid)  # type: ignore[union-attr]
    assert "sk-do-not-print" not in log.read_text()


def test_a_server_that_dies_is_reported_and_everything_stops(standin: StandinServer, tmp_path: Path) -> None:
    log = tmp_path / "ng_run.log"
    no_restarts = "++simple_weather.resources_servers.simple_weather.max_restarts=0"  # else it comes back (issue 24)
    gym = GymProcess(ROOT, SEED_CONFIG_PATHS, [*env(standin), no_restarts], log_path=log).start()
    urls = {server["name"]: server["url"] for server in gym.servers()}
    weather_pid = next(
        int(line.split()[-1]) for line in log.read_text().splitlines() if line.startswith("simple_weather ")
    )
    os.kill(weather_pid, signal.SIGKILL)
    assert gym.process is not None
    assert gym.process.wait(30) == 1
    text = log.read_text()
    assert "simple_weather (resources_servers/simple_weather) exited unexpectedly (killed by signal SIGKILL)" in text
    assert not any(answers(url) for url in urls.values())


def test_kill_9_of_ng_run_leaves_no_server_behind(standin: StandinServer, tmp_path: Path) -> None:
    log = tmp_path / "ng_run.log"
    gym = GymProcess(ROOT, SEED_CONFIG_PATHS, env(standin), log_path=log).start()
    urls = [server["url"] for server in gym.servers()]
    assert gym.process is not None
    os.kill(gym.process.pid, signal.SIGKILL)
    gym.process.wait()
    wait_until(lambda: not any(answers(url) for url in urls), "every server gone", timeout=60)


def run_ng_run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [console_script("ng_run"), f"+config_paths=[{', '.join(SEED_CONFIG_PATHS)}]", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_model_not_served_is_refused_at_start_up_with_the_served_list(standin: StandinServer) -> None:
    result = run_ng_run(*env(standin, model="meta-llama/Llama-3.1-8B-Instruct"), f"+head_server.port={free_port()}")
    assert result.returncode == 1
    assert "does not serve model 'meta-llama/Llama-3.1-8B-Instruct'" in result.stdout
    assert standin.script.model in result.stdout
    assert "sk-do-not-print" not in result.stdout + result.stderr


def test_unreachable_base_url_names_the_url_and_the_health_check() -> None:
    port = free_port()
    overrides = [f"++policy_base_url=http://127.0.0.1:{port}/v1", "++policy_api_key=x", "++policy_model_name=m"]
    result = run_ng_run(*overrides, f"+head_server.port={free_port()}")
    assert result.returncode == 1
    assert f"cannot reach the vLLM server at http://127.0.0.1:{port}/v1/models" in result.stdout
    assert f"curl http://127.0.0.1:{port}/health" in result.stdout


def test_config_errors_stop_before_anything_starts() -> None:
    result = run_ng_run()
    assert result.returncode == 2
    assert "uses ${policy_base_url}, but 'policy_base_url' is not set" in result.stderr


def test_a_ray_cluster_address_that_is_not_one_is_refused_before_anything_starts(standin: StandinServer) -> None:
    result = run_ng_run(*env(standin), "+ray_head_node_address=head-node", f"+head_server.port={free_port()}")
    assert result.returncode == 2
    assert "ray_head_node_address" in result.stderr and "expected host:port" in result.stderr


def test_two_ng_runs_at_once_never_share_a_port(standin: StandinServer, tmp_path: Path) -> None:
    first = GymProcess(ROOT, SEED_CONFIG_PATHS, env(standin), log_path=tmp_path / "a.log")
    second = GymProcess(ROOT, SEED_CONFIG_PATHS, env(standin), log_path=tmp_path / "b.log")
    with first, second:
        ports = [server["url"] for gym in (first, second) for server in gym.servers()]
        assert len(set(ports)) == 6


def test_head_port_in_use_is_a_clear_error(standin: StandinServer, tmp_path: Path) -> None:
    with GymProcess(ROOT, SEED_CONFIG_PATHS, env(standin), log_path=tmp_path / "a.log") as gym:
        result = run_ng_run(*env(standin), f"+head_server.port={gym.head_port}")
    assert result.returncode == 2
    assert f"head_server.port: cannot listen on 127.0.0.1:{gym.head_port}" in result.stderr


def test_collect_against_the_running_gym_and_resume(standin: StandinServer, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    args = (
        "+agent_name=simple_weather_simple_agent",
        "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
    )
    with GymProcess(ROOT, SEED_CONFIG_PATHS, env(standin), log_path=tmp_path / "a.log") as gym:
        gym.collect(*args, "+limit=10")
        assert len(output.read_text().splitlines()) == 10
        again = gym.collect(*args, "+limit=10", "+num_repeats=2")
        assert "(+10 from earlier runs)" in again.stdout
        assert len(output.read_text().splitlines()) == 20
        unknown = gym.collect("+agent_name=nope", *args[1:], check=False)
        assert unknown.returncode == 2 and "agents: simple_weather_simple_agent" in unknown.stderr


def test_ng_test_runs_a_servers_tests() -> None:
    result = subprocess.run(
        [console_script("ng_test"), "+entrypoint=resources_servers/simple_weather", "+pytest_args=-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    missing = subprocess.run([console_script("ng_test"), "+entrypoint=resources_servers/nope"], cwd=ROOT,
                             capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "no server folder" in missing.stderr


def test_console_scripts_are_installed() -> None:
    for name in ("ng_run", "ng_collect_rollouts", "ng_test", "ng_status", "gym"):
        assert Path(console_script(name)).is_file(), name
    assert Path(sys.executable).parent.name == "bin"


def test_model_server_workers_keep_each_session_on_one_vllm(tmp_path: Path) -> None:
    with StandinServer(StandinScript()) as first, StandinServer(StandinScript()) as second:
        overrides = [
            f"++policy_base_url=[{first.base_url}, {second.base_url}]",
            "++policy_api_key=x",
            f"++policy_model_name={first.script.model}",
            "++policy_model.responses_api_models.vllm_model.num_workers=3",
        ]
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=tmp_path / "ng_run.log") as gym:
            model_url = gym.url_of("policy_model")
            launcher = next(
                int(line.split()[-1])
                for line in (tmp_path / "ng_run.log").read_text().splitlines()
                if line.startswith("policy_model ")
            )
            workers = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
            assert len(workers) == 3
            for session in range(24):
                opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
                for turn in range(3):
                    body = json.dumps({"input": f"session {session} turn {turn}"}).encode()
                    request = urllib.request.Request(
                        model_url + "/v1/responses", body, {"Content-Type": "application/json"}
                    )
                    with opener.open(request, timeout=10) as answer:
                        assert answer.status == 200
        per_server = [Counter(s.log.session_ids()) for s in (first, second)]
    sessions = set(per_server[0]) | set(per_server[1])
    assert len(sessions) == 24
    assert not set(per_server[0]) & set(per_server[1]), "a session's turns went to both vLLM servers"
    assert all(count == 3 for counter in per_server for count in counter.values())
    assert min(len(per_server[0]), len(per_server[1])) >= 6, "new sessions were not spread"


def test_ctrl_c_during_collection_keeps_whole_finished_rollouts_and_resume_completes(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    args = [
        "+agent_name=simple_weather_simple_agent",
        "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
        "+limit=10",
        "+num_repeats=4",
        "+num_samples_in_parallel=4",
    ]
    with StandinServer(StandinScript()) as standin, GymProcess(ROOT, SEED_CONFIG_PATHS, env(standin),
                                                              log_path=tmp_path / "ng_run.log") as gym:  # fmt: skip
        # Ten model calls pass (one a rollout: ten rollouts finish), then every call is held: Ctrl-C comes once
        # the four rollouts in flight are held, so ten finished and none can finish meanwhile.
        hold = Hold()
        standin.script.inject(*[Delay(0.0)] * 10, *[hold] * 100)
        collector = gym.collector(*args)
        hold.wait_for_held(4)
        collector.send_signal(signal.SIGINT)
        stdout, stderr = collector.communicate(timeout=60)
        standin.script.faults.clear()
        hold.release()
        assert "cancelling" in stderr
        assert "expected 40" in stdout
        lines = output.read_bytes().split(b"\n")
        assert lines[-1] == b"", "the output must end with a whole line"
        done = [json.loads(line) for line in lines[:-1]]
        assert len(done) == 10, "every rollout that finished before the stop is kept, and only those"
        assert f"finished {len(done)}," in stdout, "the counts printed match the file"
        resumed = gym.collect(*args)
    assert f"(+{len(done)} from earlier runs)" in resumed.stdout
    rows = [json.loads(line) for line in output.read_text().split("\n") if line]
    keys = [(row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows]
    assert sorted(keys) == [(task, rollout) for task in range(10) for rollout in range(4)]


async def test_200_sessions_on_two_vllm_servers_stay_put_spread_evenly_and_survive_one_dying(tmp_path: Path) -> None:
    sessions, turns = 200, 3
    with StandinServer(StandinScript()) as first, StandinServer(StandinScript()) as second:
        overrides = [
            f"++policy_base_url=[{first.base_url}, {second.base_url}]",
            "++policy_api_key=x",
            f"++policy_model_name={first.script.model}",
        ]
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=tmp_path / "ng_run.log") as gym:
            url = gym.url_of("policy_model") + "/v1/responses"
            jars = [aiohttp.CookieJar(unsafe=True) for _ in range(sessions)]
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:

                async def turn(index: int, number: int) -> None:
                    cookies = {c.key: c.value for c in jars[index]}
                    body = {"input": f"session {index} turn {number}", "max_output_tokens": 8}
                    async with http.post(url, json=body, cookies=cookies) as resp:
                        assert resp.status == 200, await resp.text()
                        jars[index].update_cookies(resp.cookies)

                # Every first turn is held until all 200 sessions are in flight: where each new session goes then
                # depends on the load the model server sees, not on which stand-in happened to answer faster.
                hold = Hold()
                for standin in (first, second):
                    standin.script.inject(*[hold] * sessions)
                first_turns = asyncio.gather(*(turn(i, 0) for i in range(sessions)))
                await asyncio.to_thread(hold.wait_for_held, sessions)
                hold.release()
                await first_turns
                await asyncio.gather(*(turn(i, 1) for i in range(sessions)))
                placed = [Counter(s.log.session_ids()) for s in (first, second)]
                assert not set(placed[0]) & set(placed[1]), "a session's turns went to both servers"
                assert abs(len(placed[0]) - len(placed[1])) <= sessions * 0.1, [len(p) for p in placed]
                second.script.down = DropConnection()  # the second vLLM stops answering
                await asyncio.gather(*(turn(i, 2) for i in range(sessions)))
        finished = Counter(first.log.session_ids())
    assert len(finished) == sessions
    assert all(finished[s] == turns for s in placed[0]), "sessions on the surviving server stay there"
    assert all(finished[s] == 1 for s in placed[1]), "sessions of the dead server finish on the other one"
