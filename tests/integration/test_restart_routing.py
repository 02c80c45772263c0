"""Sessions move off a replica that ng_run restarts (issue 24): with two replicas of an instance, kill -9 one while
rollouts are held on the model; its sessions move to the other replica and every new session goes there while it
restarts; once it answers /health it serves again, and then carries everything while the other one restarts.

The router is the agent's (two resources server replicas) or the collector's (two agent replicas). What holds a
restart open is a gate at interpreter start (a `sitecustomize` on PYTHONPATH, below): the restarted process of
the replica whose `<label>.hold` file exists waits, before it imports anything, until the test removes the file.
So each "during the restart" is a state, never a time: the replica refuses connections and its new process is
held. Every wait is for a state (requests held at the vLLM stand-in, a file, /servers, a connection)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from ngym.http.app import HttpError
from ngym.http.probe import answers
from ngym.rollouts.failures import MODEL, TOOL, VERIFY
from ngym.servers.base import ServerContext
from ngym.servers.resources import ResourcesServer, ResourcesServerConfig
from ngym.servers.sessions import SESSION_COOKIE, new_session_id
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess
from testkit.standin.script import Hold, StandinScript
from testkit.standin.server import StandinServer
from testkit.waiting import line_count, wait_until

ROOT = Path(__file__).resolve().parents[2]
AGENT = "simple_weather_simple_agent"
KEYS = {
    "simple_weather": "simple_weather.resources_servers.simple_weather",
    AGENT: f"{AGENT}.responses_api_agents.simple_agent",
}
PARALLEL = 8
HELD_S = 60.0  # hang guard of each wait for held requests (a state, not a measurement)
GATE_ENV = "NGYM_TEST_RESTART_GATE"
SITECUSTOMIZE = f'''
import os, time
gate = os.environ.get("{GATE_ENV}")
if gate:
    with open("/proc/self/cmdline", "rb") as own:
        argv = own.read().decode(errors="replace").split("\\0")
    label = argv[argv.index("--instance") + 1] if "--instance" in argv[:-1] else None
    hold = os.path.join(gate, f"{{label}}.hold")
    if label is not None and os.path.exists(hold):
        with open(os.path.join(gate, f"{{label}}.held"), "w") as held:
            held.write(str(os.getpid()))
        deadline = time.monotonic() + 300  # the test removes the file long before
        while os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(0.01)
'''


def replicas(gym: GymProcess, name: str) -> list[dict[str, Any]]:
    return list(next(server for server in gym.servers() if server["name"] == name)["replicas"])


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def refuses(url: str) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port_of(url)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def connected(pid: int, port: int) -> bool:
    """Whether process `pid` holds an established TCP connection to `port` (a router's /health probe stays open in
    its connection pool: the replica is back in that router's rotation)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in inodes:
                return True
    return False


class Restarts:
    """Kill -9 a replica with its restart held at the gate; let it go on."""

    def __init__(self, gym: GymProcess, gate: Path, name: str, collector: subprocess.Popen[str]) -> None:
        self.gym, self.gate, self.name, self.collector = gym, gate, name, collector

    def kill_held(self, replica: int) -> dict[str, Any]:
        """Kill -9 the replica; return once ng_run restarted it and its new process waits at the gate, the
        replica refusing connections meanwhile."""
        label = f"{self.name}#{replica}"
        victim = replicas(self.gym, self.name)[replica]
        (self.gate / f"{label}.hold").touch()
        os.kill(victim["pid"], signal.SIGKILL)
        held = self.gate / f"{label}.held"
        wait_until(held.is_file, f"{label} restarted and held at the gate", process=self.collector)
        now = replicas(self.gym, self.name)[replica]
        assert now["state"] == "starting" and now["restarts"] == victim["restarts"] + 1, now
        assert refuses(victim["url"]), f"{label} accepts connections while it restarts"
        return victim

    def held(self, replica: int) -> bool:
        label = f"{self.name}#{replica}"
        return (self.gate / f"{label}.hold").is_file() and (self.gate / f"{label}.held").is_file()

    def let_go(self, replica: int, router_pid: int) -> None:
        """Release the held restart; return once the replica is up and the router has it back in rotation."""
        label = f"{self.name}#{replica}"
        (self.gate / f"{label}.hold").unlink()
        (self.gate / f"{label}.held").unlink()

        def up() -> bool:
            return bool(replicas(self.gym, self.name)[replica]["state"] == "up")

        wait_until(up, f"{label} up again", process=self.collector)
        url = replicas(self.gym, self.name)[replica]["url"]
        wait_until(lambda: connected(router_pid, port_of(url)), f"{label} probed back", process=self.collector)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["simple_weather", AGENT])
def test_sessions_move_off_a_restarting_replica_and_both_serve_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(gate), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv(GATE_ENV, str(gate))
    log, output = tmp_path / "ng_run.log", tmp_path / "out.jsonl"
    failures = tmp_path / "out.failures.jsonl"
    args = [
        f"+agent_name={AGENT}",
        "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
        "+num_repeats=5",
        f"+num_samples_in_parallel={PARALLEL}",
    ]
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        overrides = [
            f"++policy_base_url={standin.base_url}",
            "++policy_api_key=x",
            f"++policy_model_name={standin.script.model}",
            f"++{KEYS[name]}.num_replicas=2",
        ]
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=log) as gym:
            holds = [Hold() for _ in range(4)]
            standin.script.inject(*[holds[0]] * PARALLEL)
            collector = gym.collector(*args)
            # The agent routes over resources replicas; the collector over agent replicas.
            router_pid = replicas(gym, AGENT)[0]["pid"] if name == "simple_weather" else collector.pid
            restarts = Restarts(gym, gate, name, collector)
            try:
                holds[0].wait_for_held(PARALLEL, HELD_S)  # eight rollouts on the model, four on each replica
                standin.script.inject(*[holds[1]] * PARALLEL)
                restarts.kill_held(0)
                # The four sessions of #0 move to #1 (an agent's at once; a resources server's on its next call,
                # retried whole), the four of #1 go on: eight on the model again, every one through #1.
                holds[0].release()
                holds[1].wait_for_held(PARALLEL, HELD_S)
                standin.script.inject(*[holds[2]] * PARALLEL)
                holds[1].release()
                # Four rollouts finish and four new ones start, on #1: #0 is still held.
                holds[2].wait_for_held(PARALLEL, HELD_S)
                assert restarts.held(0) and refuses(replicas(gym, name)[0]["url"])
                assert line_count(output) >= PARALLEL // 2
                restarts.let_go(0, router_pid)
                # #0 serves again: with #1 restarting, everything goes to #0.
                standin.script.inject(*[holds[3]] * PARALLEL)
                restarts.kill_held(1)
                holds[2].release()
                holds[3].wait_for_held(PARALLEL, HELD_S)
                assert restarts.held(1)
                restarts.let_go(1, router_pid)
            finally:
                for hold in holds:
                    hold.release()
                for held in gate.glob("*.hold"):
                    held.unlink()
            stdout, stderr = collector.communicate(timeout=120)
            assert collector.returncode in (0, 3), stdout + stderr
            now = replicas(gym, name)
            assert [(r["state"], r["restarts"], r["last_exit"]) for r in now] == [
                ("up", 1, "killed by signal SIGKILL")
            ] * 2
            assert all(answers(r["url"]) for r in now)
    done = [json.loads(line) for line in output.read_text().splitlines()]
    failed = [json.loads(line) for line in failures.read_text().splitlines()] if failures.is_file() else []
    keys = [(row["_ng_task_index"], row["_ng_rollout_index"]) for row in done + failed]
    assert sorted(keys) == [(task, rollout) for task in range(10) for rollout in range(5)], (
        f"lost or repeated: {stdout}"
    )
    assert all(row["class"] in (TOOL, VERIFY, MODEL, "agent") for row in failed), failed


def test_a_resources_session_from_before_a_restart_is_refused_not_served_without_its_state() -> None:
    server: ResourcesServer[ResourcesServerConfig] = ResourcesServer(ResourcesServerConfig(), ServerContext("env", {}))

    def call(session_id: str) -> str:
        cookie = f"{SESSION_COOKIE}={session_id}".encode()
        return server._session(Request({"type": "http", "headers": [(b"cookie", cookie)]}))

    mine = new_session_id()
    assert call(mine) == mine and call("") == ""
    earlier = "0123abcd-" + mine.split("-", 1)[1]  # the same id, opened by the process before a restart
    with pytest.raises(HttpError) as refused:
        call(earlier)
    assert (refused.value.status, refused.value.code) == (503, "session_lost")
    assert f"session {earlier} was opened by an earlier process of env" in refused.value.message
