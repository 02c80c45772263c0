"""The trained weather policy (models/weather-policy) through real vLLM and the seed's commands, unforced.

No structured outputs here: the tool calls are the policy's own, parsed by vLLM's hermes parser, and the
rewards are simple_weather's verdicts on them.
"""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ngym.http.app import serve_in_background
from ngym.vllm.process import VllmServer
from responses_api_models.vllm_model.app import VllmModel
from testkit.chaos import Accounting, back
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess
from testkit.token_turns import broken_turns, measure, response_turns
from testkit.waiting import line_count, pid_alive, wait_until

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
POLICY_DIR = ROOT / "models" / "weather-policy"
EXAMPLE = "resources_servers/simple_weather/data/example.jsonl"
HELDOUT = "resources_servers/simple_weather/data/heldout.jsonl"
TRAINING_CONFIG_PATHS = (
    "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
)
# Issue 6's targets (measured: policy/README.md). The sampled run has no per-request `seed` (vLLM 0.32's CPU
# build crashes its engine on one), but at the measured rate 70 is many standard deviations away.
TARGET_GREEDY = 90
TARGET_T1 = 70


@pytest.fixture(scope="module")
def policy_server(vllm_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    log = tmp_path_factory.mktemp("vllm-policy") / "vllm.log"
    with VllmServer(POLICY_DIR, python=vllm_python, served_model_name="weather-policy", log_path=log,
                    extra_args=("--enable-scale-out",)) as server:  # fmt: skip
        yield server


def policy_overrides(server: VllmServer) -> list[str]:
    return [f"++policy_base_url={server.base_url}", "++policy_api_key=none", f"++policy_model_name={server.model_name}"]


@pytest.fixture(scope="module")
def policy_gym(policy_server: VllmServer) -> Iterator[GymProcess]:
    with GymProcess(ROOT, SEED_CONFIG_PATHS, policy_overrides(policy_server)) as gym:
        yield gym


@pytest.fixture(scope="module")
def training_gym(policy_server: VllmServer) -> Iterator[GymProcess]:
    with GymProcess(ROOT, TRAINING_CONFIG_PATHS, policy_overrides(policy_server)) as gym:
        yield gym


def collect(gym: GymProcess, output: Path, *args: str) -> list[dict[str, Any]]:
    gym.collect("+agent_name=simple_weather_simple_agent", f"+output_jsonl_fpath={output}", *args)
    return [json.loads(line) for line in output.read_text().split("\n") if line]


def weather_calls(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in row["response"]["output"] if item["type"] == "function_call"]


def test_seed_flow_solves_the_example_tasks(policy_gym: GymProcess, tmp_path: Path) -> None:
    rows = collect(policy_gym, tmp_path / "example.jsonl", f"+input_jsonl_fpath={EXAMPLE}", "+limit=10",
                   "+responses_create_params={temperature: 0}")  # fmt: skip
    assert len(rows) == 10
    for row in rows:
        calls = weather_calls(row)
        assert calls and calls[0]["name"] == "get_weather", row["response"]["output"]
        assert row["reward"] == 1.0, (row["reason"], row["response"]["output"])
        final = row["response"]["output"][-1]
        assert final["type"] == "message" and final["status"] == "completed"


def test_heldout_cities_greedy(policy_gym: GymProcess, tmp_path: Path) -> None:
    rows = collect(policy_gym, tmp_path / "heldout.jsonl", f"+input_jsonl_fpath={HELDOUT}",
                   "+responses_create_params={temperature: 0}")  # fmt: skip
    assert len(rows) == 100
    solved = [row for row in rows if row["reward"] == 1.0]
    misses = [(row["expected_city"], row["reason"], row.get("called_city")) for row in rows if row["reward"] != 1.0]
    print(f"held-out, greedy: {len(solved)}/100 solved")
    assert len(solved) >= TARGET_GREEDY, misses


def test_heldout_cities_sampled(policy_gym: GymProcess, tmp_path: Path) -> None:
    rows = collect(policy_gym, tmp_path / "heldout_t1.jsonl", f"+input_jsonl_fpath={HELDOUT}",
                   "+responses_create_params={temperature: 1.0}")  # fmt: skip
    assert len(rows) == 100
    solved = sum(1 for row in rows if row["reward"] == 1.0)
    print(f"held-out, temperature 1: {solved}/100 solved")
    assert solved >= TARGET_T1, solved


def test_training_rollouts_are_token_exact_across_turns(training_gym: GymProcess, tmp_path: Path) -> None:
    """The agent loop in training mode at temperature 1: each model turn's prompt begins with the previous
    turn's prompt and generated IDs, over 100 two-turn rollouts (tool call, then answer)."""
    rows = collect(training_gym, tmp_path / "train.jsonl", f"+input_jsonl_fpath={HELDOUT}",
                   "+responses_create_params={temperature: 1.0}")  # fmt: skip
    assert len(rows) == 100
    turns = [response_turns(row["response"]["output"]) for row in rows]
    assert sum(len(t) >= 2 for t in turns) >= 90, "most rollouts must have a tool call and an answer"
    broken = [(row["expected_city"], broken_turns(t)) for row, t in zip(rows, turns, strict=True) if broken_turns(t)]
    assert broken == []


async def test_free_text_chat_conversations_are_token_exact(policy_server: VllmServer) -> None:
    """Three-turn Chat conversations through the model server, free text and tool calls, cut by max_tokens."""
    config = {"policy_model": {"responses_api_models": {"vllm_model": {
        "entrypoint": "app.py", "base_url": policy_server.base_url, "model": policy_server.model_name,
        "return_token_id_information": True, "token_exact": "require"}}}}  # fmt: skip
    server = VllmModel.from_config(config, "policy_model")
    async with serve_in_background(server.app()) as url:
        exact, total = await measure(url, conversations=30, turns=3, max_tokens=24, temperature=1.0)
    assert (exact, total) == (30, 30)


def test_kill_9s_during_a_collection_on_real_vllm_lose_no_rollout(policy_server: VllmServer, tmp_path: Path) -> None:
    """The chaos run on real vLLM with the weather policy, smaller than the stand-in's: two replicas of the agent,
    of simple_weather and of the model server; at fixed counts of rows written, a seeded random replica is
    killed with SIGKILL, and the next kill waits until it is back. Every rollout ends exactly once, in the
    output or as an infrastructure failure; ng_run still serves; Ctrl-C leaves nothing; a rerun completes all."""
    chance = random.Random(20261205)
    output, expected = tmp_path / "chaos.jsonl", 10 * REPEATS_UNDER_KILLS
    kinds = ("policy_model.responses_api_models.vllm_model", "simple_weather.resources_servers.simple_weather",
             "simple_weather_simple_agent.responses_api_agents.simple_agent")  # fmt: skip
    overrides = [*policy_overrides(policy_server), *(f"++{kind}.num_replicas=2" for kind in kinds)]
    args = ["+agent_name=simple_weather_simple_agent", f"+input_jsonl_fpath={EXAMPLE}", f"+output_jsonl_fpath={output}",
            f"+num_repeats={REPEATS_UNDER_KILLS}", "+num_samples_in_parallel=4"]  # fmt: skip
    with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=tmp_path / "ng_run.log") as gym:
        pids = {replica["pid"] for replica in gym.replicas().values()}
        collector = gym.collector(*args)
        killed = []
        for moment in KILL_MOMENTS:
            wait_until(lambda moment=moment: line_count(output) >= moment or collector.poll() is not None,
                       f"{moment} rows written")  # fmt: skip
            if collector.poll() is not None:
                break
            label, victim = chance.choice(sorted(gym.replicas().items()))
            os.kill(victim["pid"], signal.SIGKILL)
            killed.append(label)
            wait_until(lambda label=label, before=victim["restarts"]: back(gym, label, before, pids),
                       f"{label} back after kill -9")  # fmt: skip
        stdout, stderr = collector.communicate(timeout=600)
        report = f"killed {killed}:\n{stdout}\n{stderr}"
        assert collector.returncode in (0, 3) and len(killed) >= 2, report
        assert gym.process is not None and gym.process.poll() is None, report
        wanted = [(task, repeat) for task in range(10) for repeat in range(REPEATS_UNDER_KILLS)]
        assert Accounting.read(output).problems(wanted) == [], report
        gym.collect(*args)  # the same command completes what failed
        assert line_count(output) == expected
        pids |= {replica["pid"] for replica in gym.replicas().values()}
        assert gym.stop() == 0
    assert not [pid for pid in pids if pid_alive(pid)]


REPEATS_UNDER_KILLS = 40
# Rows written before each kill; on a fast machine the collection may end before the last ones (at least two land).
KILL_MOMENTS = (10, 100, 190, 280)
