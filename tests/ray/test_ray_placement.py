"""ng_run on a real Ray cluster (issue 16): the seed's flow with simple_weather replicas on both nodes, a replica
killed mid-run and every rollout finished, Ctrl-C leaving no actor and no process; every server on 127.0.0.1.

vLLM is the scripted stand-in (these are about placement, not about vLLM)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest

from ngym.vllm.process import free_port
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess, console_script
from testkit.ray_cluster import SECOND_MACHINE, RayCluster
from testkit.standin.script import Delay, Hold, RequestLog, StandinScript
from testkit.standin.server import StandinServer
from testkit.waiting import pid_alive

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
MODEL = "policy_model.responses_api_models.vllm_model"
WEATHER = "simple_weather.resources_servers.simple_weather"
AGENT = "simple_weather_simple_agent.responses_api_agents.simple_agent"
COLLECT = (
    "+agent_name=simple_weather_simple_agent",
    "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
)


def overrides(standin: StandinServer, cluster: RayCluster, *more: str) -> list[str]:
    return [
        f"++policy_base_url={standin.base_url}",
        "++policy_api_key=sk-ray-do-not-print",
        f"++policy_model_name={standin.script.model}",
        f"+ray_head_node_address={cluster.address}",
        *more,
    ]


def table(log: str) -> dict[str, list[str]]:
    """ng_run's servers table: instance -> [type, url, node, pid]."""
    lines = log.split("ng_run: all servers are ready\n", 1)[1].split("\nng_run: Ctrl-C", 1)[0].splitlines()
    return {line.split()[0]: line.split()[1:] for line in lines[2:]}


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def wait_for(condition: object, what: str, timeout: float = 60.0) -> None:
    """Poll until condition() holds; the timeout is a hang guard, not a measurement."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {timeout:g} s")
        time.sleep(0.2)


def ngym_actors(ray: ModuleType) -> list[dict[str, str]]:
    return [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"].startswith("ngym-")]


def test_seed_flow_on_two_nodes_survives_a_killed_replica_and_ctrl_c_leaves_nothing(
    ray_cluster: RayCluster, driver: ModuleType, tmp_path: Path
) -> None:
    ray = driver
    second_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and SECOND_MACHINE in n["Resources"])
    log = tmp_path / "ng_run.log"
    output = tmp_path / "out.jsonl"
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        settings = overrides(
            standin,
            ray_cluster,
            # Two CPUs each on nodes of three: one weather replica per node.
            f"++{WEATHER}.num_replicas=2",
            f"++{WEATHER}.num_cpus=2",
            f"++{MODEL}.num_cpus=0.5",
            f"++{AGENT}.num_cpus=0.5",
            f"++{AGENT}.resources={{{SECOND_MACHINE}: 1}}",
        )
        gym = GymProcess(ROOT, SEED_CONFIG_PATHS, settings, log_path=log).start(timeout=300)
        try:
            rows = table(log.read_text())
            weather = [rows["simple_weather#0"], rows["simple_weather#1"]]
            assert weather[0][2] != weather[1][2], "the weather replicas are not on both nodes"
            assert rows["simple_weather_simple_agent"][2].endswith(second_node[:8])
            servers = {s["name"]: s for s in gym.servers()}
            assert servers["simple_weather"]["urls"] == [weather[0][1], weather[1][1]]
            assert servers["simple_weather"]["url"] == weather[0][1]
            urls = [url for s in servers.values() for url in s["urls"]]
            assert len(urls) == 4 and all(url.startswith("http://127.0.0.1:") for url in urls)
            assert ray_cluster.new_listeners_off_loopback() == set()
            pids = [int(row[3]) for name, row in rows.items() if name != "head_server"]
            actor_pids = [parent_of(pid) for pid in pids]
            assert len(ngym_actors(ray)) == len(pids) + 1  # and the run's port registry

            # A replica killed mid-run: the rollouts it held fail and are retried; every rollout finishes.
            standin.script.down = Delay(0.3)
            hold = Hold()
            standin.script.inject(*[hold] * 4)
            collector = subprocess.Popen(
                [console_script("ng_collect_rollouts"), *COLLECT, f"+output_jsonl_fpath={output}", "+limit=10",
                 "+num_repeats=4", "+num_samples_in_parallel=4", f"+head_server.port={gym.head_port}"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            # Killed while it holds rollouts: the first four (all in flight) have their sessions on the weather
            # replicas and wait in their first model call.
            hold.wait_for_held(4)
            killed = int(weather[0][3])
            os.kill(killed, signal.SIGKILL)
            hold.release()
            stdout, stderr = collector.communicate(timeout=240)
            assert collector.returncode == 0, stdout + stderr
            assert "expected 40, finished 40, failed 0" in stdout, stdout
            done = [json.loads(line) for line in output.read_text().splitlines()]
            keys = sorted((row["_ng_task_index"], row["_ng_rollout_index"]) for row in done)
            assert keys == [(task, rollout) for task in range(10) for rollout in range(4)]
            # Two model calls a rollout: the rollouts the killed replica held were run again.
            assert standin.script.log.count() > 2 * 40

            # Ray restarted the replica, on the port the others know.
            wait_for(lambda: "simple_weather#0 is up again" in log.read_text(), "the replica to be restarted")
            text = log.read_text()  # seen down, or restarted between two of ng_run's looks
            assert "simple_weather#0 is down; Ray restarts it" in text or "simple_weather#0 was down" in text
            assert gym.servers()[1]["urls"] == [weather[0][1], weather[1][1]]
            assert [replica["restarts"] for replica in gym.servers()[1]["replicas"]] == [1, 0]  # as ng_status shows
            restarted = int(
                log.read_text().split("simple_weather#0 is up again at ")[1].split("(pid ")[1].split(",")[0]
            )
            assert restarted != killed and pid_alive(restarted)
            pids.append(restarted)
            actor_pids.append(parent_of(restarted))
        finally:
            code = gym.stop(timeout=60)
    assert code == 0
    assert "sk-ray-do-not-print" not in log.read_text()
    for path in ray_cluster.session_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert b"sk-ray-do-not-print" not in path.read_bytes(), f"a secret in Ray's file {path}"
    # Ctrl-C left the cluster as it was: no actor, every resource free, no process.
    assert ngym_actors(ray) == []
    wait_for(lambda: ray.available_resources() == ray.cluster_resources(), "every resource to be given back")
    wait_for(lambda: not any(pid_alive(pid) for pid in pids + actor_pids), "every server and actor process to end")


async def test_requests_never_go_through_ray_so_no_actor_concurrency_caps_them(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """Ray caps an actor's concurrent calls (max_concurrency; 1000 for async actors by default). A replica's
    requests go to its HTTP server, so 1,100 at once on one replica all reach vLLM before any answer comes."""
    count = 1100
    script = StandinScript(log=RequestLog(maxlen=0))
    with StandinServer(script) as standin:
        settings = overrides(standin, ray_cluster, f"++{MODEL}.num_cpus=0.5")
        config = ["responses_api_models/vllm_model/configs/vllm_model.yaml"]
        with GymProcess(ROOT, config, settings, log_path=tmp_path / "ng_run.log").start(timeout=300) as gym:
            url = gym.url_of("policy_model") + "/v1/chat/completions"
            standin.script.down = Delay(20)
            body = {"model": standin.script.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            answered = 0
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as http:

                async def one() -> int:
                    nonlocal answered
                    async with http.post(url, json=body) as resp:
                        await resp.read()
                        answered += 1
                        return resp.status

                calls = [asyncio.create_task(one()) for _ in range(count)]
                deadline = time.monotonic() + 120  # hang guard
                while standin.script.log.count() < count and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                in_flight_at_once, answered_by_then = standin.script.log.count(), answered
                statuses = await asyncio.gather(*calls)
    assert in_flight_at_once == count and answered_by_then == 0
    assert statuses == [200] * count


def test_cluster_errors_are_clear_and_start_nothing(ray_cluster: RayCluster, driver: ModuleType) -> None:
    with StandinServer(StandinScript()) as standin:
        command = [console_script("ng_run"), f"+config_paths=[{', '.join(SEED_CONFIG_PATHS)}]",
                   f"+head_server.port={free_port()}"]  # fmt: skip

        def ng_run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                                  check=False)  # fmt: skip

        nowhere = ng_run(*overrides(standin, ray_cluster)[:3], f"+ray_head_node_address=127.0.0.1:{free_port()}")
        too_big = ng_run(*overrides(standin, ray_cluster, f"++{WEATHER}.resources={{gpu_box: 1}}"))
        malformed = ng_run(*overrides(standin, ray_cluster)[:3], "+ray_head_node_address=head-node")
    assert nowhere.returncode == 1
    assert "cannot reach the Ray cluster at 127.0.0.1:" in nowhere.stdout
    assert too_big.returncode == 1
    assert f"no node of the Ray cluster can hold a replica of {WEATHER}" in too_big.stdout
    assert "gpu_box=1" in too_big.stdout
    assert malformed.returncode == 2
    assert "ray_head_node_address" in malformed.stderr and "expected host:port" in malformed.stderr
    assert ngym_actors(driver) == []


@pytest.fixture(autouse=True)
def _no_leftover_actor_between_tests(request: pytest.FixtureRequest) -> None:
    """Each test starts on a cluster without any actor of an earlier ng_run."""
    if "driver" in request.fixturenames:
        ray = request.getfixturevalue("driver")
        wait_for(lambda: ngym_actors(ray) == [], "actors of an earlier test to go", timeout=30)
