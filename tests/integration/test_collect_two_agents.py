"""NeMo Gym's rollout collection through the real commands: one input file feeds two agents of one ng_run
(picked by each row's agent_ref), ng_collect_rollouts is killed with SIGKILL mid-run, and the same command
finishes the job with exactly one row per (task, rollout).

vLLM is the scripted stand-in (one per agent, so that a row shows which agent ran it)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess, console_script
from testkit.standin.script import Delay, Hold, StandinScript
from testkit.standin.server import StandinServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "resources_servers" / "simple_weather" / "data" / "example.jsonl"
FIRST, SECOND = "simple_weather_simple_agent", "second_weather_agent"
REPEATS = {FIRST: 2, SECOND: 3}


def second_agent_config(path: Path, standin: StandinServer) -> Path:
    """A second simple_agent over the same simple_weather, with a model server of its own."""
    config = {
        "second_model": {"responses_api_models": {"vllm_model": {
            "entrypoint": "app.py", "base_url": standin.base_url, "api_key": "none", "model": standin.script.model,
            "uses_reasoning_parser": True}}},
        SECOND: {"responses_api_agents": {"simple_agent": {
            "entrypoint": "app.py",
            "resources_server": {"type": "resources_servers", "name": "simple_weather"},
            "model_server": {"type": "responses_api_models", "name": "second_model"}}}},
    }  # fmt: skip
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def mixed_tasks(path: Path) -> dict[int, str]:
    """example.jsonl with every other row for the second agent (agent_ref); returns the agent of each task."""
    rows = [json.loads(line) for line in EXAMPLE.read_text().splitlines() if line]
    agents = {}
    for index, row in enumerate(rows):
        if index % 2:
            row["agent_ref"] = {"type": "responses_api_agents", "name": SECOND}
        agents[index] = SECOND if index % 2 else FIRST
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return agents


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def final_text(row: dict[str, Any]) -> str:
    message = row["response"]["output"][-1]
    return "".join(part.get("text", "") for part in message["content"])


def test_one_file_for_two_agents_survives_kill_9_and_resumes_to_one_row_per_rollout(tmp_path: Path) -> None:
    output = tmp_path / "out" / "rollouts.jsonl"
    agents = mixed_tasks(tmp_path / "mixed.jsonl")
    expected = sorted((task, rollout) for task, agent in agents.items() for rollout in range(REPEATS[agent]))
    args = [
        f"+agent_name={FIRST}",  # for the rows without an agent_ref
        f"+input_jsonl_fpath={tmp_path / 'mixed.jsonl'}",
        f"+output_jsonl_fpath={output}",
        f"+num_repeats={{{FIRST}: {REPEATS[FIRST]}, {SECOND}: {REPEATS[SECOND]}}}",
        "+num_samples_in_parallel=4",
    ]
    first_script = StandinScript(tool_call_mode=True, tool_answer_text="The first agent's model says hi.")
    second_script = StandinScript(tool_call_mode=True, tool_answer_text="The second agent's model says hi.")
    with StandinServer(first_script) as first, StandinServer(second_script) as second:
        config = second_agent_config(tmp_path / "second_agent.yaml", second)
        overrides = [f"++policy_base_url={first.base_url}", "++policy_api_key=none",
                     f"++policy_model_name={first.script.model}"]  # fmt: skip
        with GymProcess(ROOT, (*SEED_CONFIG_PATHS, str(config)), overrides, log_path=tmp_path / "ng_run.log") as gym:
            # Six model calls pass on each model server, then every call is held: killed once the four rollouts
            # in flight are held, so some finished (every one written before the next started) and some did not.
            hold = Hold()
            for standin in (first, second):
                standin.script.inject(*[Delay(0.0)] * 6, *[hold] * 100)
            command = [console_script("ng_collect_rollouts"), *args, f"+head_server.port={gym.head_port}"]
            collector = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            hold.wait_for_held(4)
            collector.send_signal(signal.SIGKILL)
            collector.communicate(timeout=60)
            killed_with = len(read_rows(output))
            for standin in (first, second):
                standin.script.faults.clear()
            hold.release()
            resumed = gym.collect(*args)
    rows = read_rows(output)
    keys = sorted((row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows)
    assert keys == expected, "a rollout lost or collected twice"
    assert 1 <= killed_with < len(expected)
    assert "resuming:" in resumed.stderr and f"expected {len(expected)}" in resumed.stdout
    for row in rows:
        agent = agents[row["_ng_task_index"]]
        assert row["agent_ref"]["name"] == agent
        assert final_text(row).startswith("The first" if agent == FIRST else "The second"), final_text(row)
