"""The seed's flow through the real commands (`ng_run`, `ng_collect_rollouts`) against a real vLLM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ngym.http.probe import answers
from ngym.protocol.options import ConversionOptions
from ngym.protocol.requests import responses_to_chat_request
from ngym.vllm.process import VllmServer
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess
from testkit.token_turns import broken_turns, response_turns

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
TRAINING_CONFIG_PATHS = (
    "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
)
EXAMPLE = "resources_servers/simple_weather/data/example.jsonl"
SEED_COLLECT = ("+agent_name=simple_weather_simple_agent", f"+input_jsonl_fpath={EXAMPLE}", "+limit=10")


def env_overrides(base_url: str | list[str], model: str) -> list[str]:
    url = base_url if isinstance(base_url, str) else "[" + ", ".join(base_url) + "]"
    return [f"++policy_base_url={url}", "++policy_api_key=none", f"++policy_model_name={model}"]


def read_rows(path: Path) -> list[dict[str, Any]]:
    # Not splitlines(): model text may hold U+2028 and friends, which JSON leaves unescaped.
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def request_count(server: VllmServer) -> float:
    """vLLM's own count of finished requests, from its Prometheus metrics."""
    text = server.request("GET", "/metrics").body.decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total") and not line.startswith("#")
    )


def test_seed_flow_collects_ten_scored_rollouts_and_stops_cleanly(vllm_server: VllmServer, tmp_path: Path) -> None:
    output = tmp_path / "vllm_rollouts.jsonl"
    gym = GymProcess(ROOT, SEED_CONFIG_PATHS, env_overrides(vllm_server.base_url, vllm_server.model_name))
    with gym:
        urls = [server["url"] for server in gym.servers()]
        result = gym.collect(*SEED_COLLECT, f"+output_jsonl_fpath={output}")
        assert "expected 10, finished 10, failed 0" in result.stdout
        assert "reward" in result.stdout
    assert gym.process is not None and gym.process.returncode == 0
    assert not any(answers(url) for url in urls), "a server outlived ng_run"

    rows = read_rows(output)
    assert len(rows) == 10
    assert sorted((row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows) == [(i, 0) for i in range(10)]
    for row in rows:
        assert isinstance(row["reward"], float)
        assert row["response"]["object"] == "response" and row["response"]["output"]
        assert row["responses_create_params"]["input"][-1]["role"] == "user"
    summary = json.loads((tmp_path / "vllm_rollouts.summary.json").read_text())
    assert summary["expected"] == 10 and summary["finished"] == 10 and summary["failed"] == 0


def test_training_config_returns_token_ids_matching_vllm_tokenize(vllm_server: VllmServer, tmp_path: Path) -> None:
    output = tmp_path / "train.jsonl"
    overrides = env_overrides(vllm_server.base_url, vllm_server.model_name)
    with GymProcess(ROOT, TRAINING_CONFIG_PATHS, overrides) as gym:
        gym.collect(*SEED_COLLECT[:2], "+limit=5", f"+output_jsonl_fpath={output}")
    rows = read_rows(output)
    assert len(rows) == 5
    for row in rows:
        turn_ends = [item for item in row["response"]["output"] if "generation_token_ids" in item]
        assert turn_ends, "no output item carries token information"
        for item in turn_ends:
            assert len(item["generation_token_ids"]) == len(item["generation_log_probs"]) > 0
            assert all(isinstance(t, int) for t in item["generation_token_ids"])
            assert all(isinstance(p, float) and p <= 0.0 for p in item["generation_log_probs"])
        model_items = [item for item in row["response"]["output"] if item["type"] != "function_call_output"]
        assert "generation_token_ids" in model_items[-1], "token data must sit on the last item of the turn"

        chat = responses_to_chat_request(row["responses_create_params"], vllm_server.model_name, ConversionOptions())
        tokenize = {"model": vllm_server.model_name, "messages": chat["messages"], "tools": chat["tools"],
                    "add_generation_prompt": True}  # fmt: skip
        expected = vllm_server.request("POST", "/tokenize", tokenize).json()["tokens"]
        assert turn_ends[0]["prompt_token_ids"] == expected
        # vLLM serves the token endpoints (--enable-scale-out): later turns begin with the earlier turns' tokens.
        assert broken_turns(response_turns(row["response"]["output"])) == []


@pytest.fixture(scope="module")
def second_vllm_server(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    log = tmp_path_factory.mktemp("vllm2") / "vllm.log"
    server = VllmServer(vllm_server.model_dir, python=vllm_server.python, served_model_name=vllm_server.model_name,
                        reasoning_parser=vllm_server.reasoning_parser, extra_args=vllm_server.extra_args,
                        log_path=log)  # fmt: skip
    with server:
        yield server


def test_two_base_urls_share_the_sessions(
    vllm_server: VllmServer, second_vllm_server: VllmServer, tmp_path: Path
) -> None:
    output = tmp_path / "two.jsonl"
    before = [request_count(vllm_server), request_count(second_vllm_server)]
    urls = [vllm_server.base_url, second_vllm_server.base_url]
    with GymProcess(ROOT, SEED_CONFIG_PATHS, env_overrides(urls, vllm_server.model_name)) as gym:
        # One rollout at a time: both servers are always idle when a session starts, so new sessions must
        # alternate (under load, least-loaded placement favours whichever server is faster).
        gym.collect(*SEED_COLLECT, "+num_repeats=2", "+num_samples_in_parallel=1", f"+output_jsonl_fpath={output}")
    rows = read_rows(output)
    assert len(rows) == 20
    served = [request_count(vllm_server) - before[0], request_count(second_vllm_server) - before[1]]
    turns = sum(1 for row in rows for item in row["response"]["output"] if item["type"] == "message")
    assert sum(served) == turns
    assert min(served) >= 8, f"sessions were not spread over both vLLM servers: {served}"
