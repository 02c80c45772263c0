"""Chaos on local processes: kill -9 random servers (agent, resources server, model server, two replicas
of each of the last two) at random moments of a collection; every rollout still ends exactly once, in the output
or as an infrastructure failure, ng_run keeps serving, and Ctrl-C leaves no process behind.

vLLM is the scripted stand-in. Kills happen at states (so many rows written), each after the previous victim is
back; the seed is in every failure message (NGYM_CHAOS_SEED to replay one)."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

from ngym.http.probe import answers
from testkit.chaos import Accounting, back
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess
from testkit.standin.script import Hold, StandinScript
from testkit.standin.server import StandinServer
from testkit.waiting import line_count, pid_alive, wait_until

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = {
    "policy_model": "policy_model.responses_api_models.vllm_model",
    "simple_weather": "simple_weather.resources_servers.simple_weather",
    "simple_weather_simple_agent": "simple_weather_simple_agent.responses_api_agents.simple_agent",
}
TASKS, REPEATS, KILLS, PARALLEL = 10, 200, 8, 32  # 2,000 rollouts


def test_random_kill_9s_during_a_collection_lose_no_rollout_and_leave_nothing_behind(tmp_path: Path) -> None:
    # A fixed seed in the suite (a landing must not depend on a draw); NGYM_CHAOS_SEED=<n> runs another one.
    seed = int(os.environ.get("NGYM_CHAOS_SEED") or 20261205)
    chance = random.Random(seed)
    log, output = tmp_path / "ng_run.log", tmp_path / "out.jsonl"
    expected = TASKS * REPEATS
    args = [
        "+agent_name=simple_weather_simple_agent",
        "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
        f"+num_repeats={REPEATS}",
        f"+num_samples_in_parallel={PARALLEL}",
        "+max_attempts=5",
    ]
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        overrides = [
            f"++policy_base_url={standin.base_url}",
            "++policy_api_key=x",
            f"++policy_model_name={standin.script.model}",
            f"++{INSTANCES['policy_model']}.num_replicas=2",
            f"++{INSTANCES['simple_weather']}.num_replicas=2",
            *(f"++{key}.max_restarts={KILLS}" for key in INSTANCES.values()),
        ]
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=log) as gym:
            assert gym.process is not None
            seen_pids = {replica["pid"] for replica in gym.replicas().values()}
            urls = [replica["url"] for replica in gym.replicas().values()]
            collector = gym.collector(*args)
            killed = []
            for moment in sorted(chance.sample(range(1, expected * 3 // 4), KILLS)):

                def reached(moment: int = moment) -> bool:
                    return line_count(output) >= moment or collector.poll() is not None

                wait_until(reached, f"{moment} rows written (seed {seed})")
                if collector.poll() is not None:
                    break
                # Every rollout in flight waits on the model when the kill comes, and the model calls made until the
                # victim is back wait too (retries included): the collection cannot end between two kills.
                hold = Hold()
                standin.script.inject(*[hold] * (PARALLEL * 3))
                try:
                    hold.wait_for_held(PARALLEL)
                    label, victim = chance.choice(sorted(gym.replicas().items()))
                    os.kill(victim["pid"], signal.SIGKILL)
                    killed.append(label)
                    wait_until(lambda label=label, before=victim["restarts"]: back(gym, label, before, seen_pids),
                               f"{label} back after kill -9 (seed {seed})")  # fmt: skip
                finally:
                    hold.release()
            stdout, stderr = collector.communicate(timeout=600)
            report = f"seed {seed}, killed {killed}:\n{stdout}\n{stderr}"
            assert collector.returncode in (0, 3), report
            assert gym.process.poll() is None, f"ng_run stopped ({report})"
            assert all(answers(url) for url in urls), report
            assert [replica["url"] for replica in gym.replicas().values()] == urls, "a replica moved"
            seen_pids |= {replica["pid"] for replica in gym.replicas().values()}
            assert gym.stop() == 0
    files = Accounting.read(output)
    assert files.problems([(t, r) for t in range(TASKS) for r in range(REPEATS)]) == [], report
    done, failed = files.finished, files.failed
    assert f"rollouts: expected {expected}, finished {len(done)}, failed {len(failed)}" in stdout, report
    assert len(killed) == KILLS, f"the collection ended before every kill ({report})"
    assert not [pid for pid in seen_pids if pid_alive(pid)], f"processes left behind ({report})"
