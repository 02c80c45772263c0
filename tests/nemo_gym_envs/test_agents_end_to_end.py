"""NeMo Gym's own agents on ngym: `ng_run` with NeMo Gym's config files that pair an environment with an agent
other than simple_agent (gymnasium_agent, tool_simulation_agent), the agent's code run unchanged on ngym's
`nemo_gym` in its own venv, then `ng_collect_rollouts` through the agent's `/run`.

- On the vLLM stand-in (ngym's vllm_model): the rewards the environment gives for the stand-in's fixed answers.
- Golden replay through the agent: a model that answers each call with the turn NeMo Gym recorded for the row
  (`data/example_rollouts.jsonl`, behind ngym's openai_model) gives back the recorded rewards.
`pytest -m nemo_gym_envs` selects them."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson
import pytest

from ngym.nemo_gym_envs.golden import golden_cases
from testkit.gym_process import GymProcess
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer
from tests.nemo_gym_envs.recorded_model import RecordedModel

pytestmark = pytest.mark.nemo_gym_envs

ROOT = Path(__file__).resolve().parents[2]
VLLM_MODEL = "responses_api_models/vllm_model/configs/vllm_model.yaml"
OPENAI_MODEL = "responses_api_models/openai_model/configs/openai_model.yaml"
GYMNASIUM = "example_multi_turn_gymnasium"
GYMNASIUM_AGENT = "example_multi_turn_gymnasium_agent"
TOOL_USE = "single_step_tool_use_with_argument_comparison"
TOOL_USE_AGENT = "single_step_tool_use_with_argument_comparison_agent"
# What the stand-in calls on every row: the tool call row 0 of the tool-use environment's example.jsonl expects.
AUTHENTICATE = {"user_id": "GROOM2024", "event_confirmation_code": "NIGHTCLUB2024"}


def rows(path: Path) -> list[dict[str, object]]:
    collected = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return sorted(collected, key=lambda row: int(row["_ng_task_index"]))


def config_of(tree: Path, environment: str) -> str:
    return str(tree / f"resources_servers/{environment}/configs/{environment}.yaml")


def standin_overrides(standin: StandinServer) -> list[str]:
    return [f"++policy_base_url={standin.base_url}", "++policy_api_key=none",
            f"++policy_model_name={standin.script.model}"]  # fmt: skip


def test_gymnasium_agent_drives_a_multi_turn_environment(tree: Path, tmp_path: Path) -> None:
    """example_multi_turn_gymnasium asks each row's follow-ups, then rewards the last answer holding the
    expected word; the stand-in answers every turn with the same text, which holds two rows' words."""
    examples = tree / f"resources_servers/{GYMNASIUM}/data/example.jsonl"
    given = [orjson.loads(line) for line in examples.read_bytes().splitlines()]
    script = StandinScript(reply_text="The Eiffel Tower; Python came out in 1991.")
    output = tmp_path / "gymnasium.jsonl"
    with StandinServer(script) as standin:
        with GymProcess(ROOT, [config_of(tree, GYMNASIUM), VLLM_MODEL], standin_overrides(standin),
                        log_path=tmp_path / "ng_run.log").start(300) as gym:  # fmt: skip
            gym.collect(f"+agent_name={GYMNASIUM_AGENT}", f"+input_jsonl_fpath={examples}",
                        f"+output_jsonl_fpath={output}")  # fmt: skip
            agent_url = gym.url_of(GYMNASIUM_AGENT)
            # The agent's own /aggregate_metrics (gymnasium_agent passes it on to its environment).
            request = urllib.request.Request(agent_url + "/aggregate_metrics", method="POST",
                                             data=orjson.dumps({"verify_responses": [
                                                 {"_ng_task_index": 0, "_ng_rollout_index": 0, "reward": 1.0}]}),
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=60) as answer:
                assert orjson.loads(answer.read())["agent_metrics"]["mean/reward"] == 1.0
        model_calls = script.log.count()
    collected = rows(output)
    expected = [1.0 if row["expected_answer"].lower() in script.reply_text.lower() else 0.0 for row in given]
    assert expected == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert [row["reward"] for row in collected] == expected
    # One model turn per follow-up, and the last: the agent went through every turn of every row.
    assert model_calls == sum(len(row["follow_ups"]) + 1 for row in given)
    for row, collected_row in zip(given, collected, strict=True):
        said = [item for item in collected_row["response"]["output"] if item.get("role") == "user"]  # type: ignore[index]
        assert [item["content"] for item in said] == row["follow_ups"]
        assert collected_row["terminated"] is True and collected_row["agent_ref"]["name"] == GYMNASIUM_AGENT  # type: ignore[index]
    (entry,) = orjson.loads((tmp_path / "gymnasium_aggregate_metrics.json").read_bytes())
    assert entry["agent_metrics"]["mean/reward"] == pytest.approx(sum(expected) / len(expected))


def test_tool_simulation_agent_scores_one_step(tree: Path, tmp_path: Path) -> None:
    """tool_simulation_agent asks its model once (through its own /v1/responses) and has the environment compare
    the action with the row's expected one. The stand-in calls row 0's expected tool, except after a tool's
    output (row 1's input ends so), where it answers text: rewarded where a chat message is expected."""
    examples = tree / f"resources_servers/{TOOL_USE}/data/example.jsonl"
    given = [orjson.loads(line) for line in examples.read_bytes().splitlines()]
    # Its byte-level tokeniser makes these long prompts long: room enough that no answer is cut short.
    script = StandinScript(tool_call_mode=True, tool_name="authenticate_user", tool_arguments=AUTHENTICATE,
                           max_model_len=1_000_000)  # fmt: skip
    output = tmp_path / "tool_use.jsonl"
    with StandinServer(script) as standin:
        with GymProcess(ROOT, [config_of(tree, TOOL_USE), VLLM_MODEL], standin_overrides(standin),
                        log_path=tmp_path / "ng_run.log").start(300) as gym:  # fmt: skip
            gym.collect(f"+agent_name={TOOL_USE_AGENT}", f"+input_jsonl_fpath={examples}",
                        f"+output_jsonl_fpath={output}")  # fmt: skip
    collected = rows(output)
    answered_text = [row["responses_create_params"]["input"][-1].get("type") == "function_call_output" for row in given]
    expected_kind = [row["expected_action"]["type"] for row in given]
    assert answered_text == [False, True, False, False, False]
    assert expected_kind == ["function_call", "message", "function_call", "message", "function_call"]
    assert [row["reward"] for row in collected] == [1.0, 1.0, 0.0, 0.0, 0.0]
    for text, collected_row in zip(answered_text, collected, strict=True):
        kinds = [item["type"] for item in collected_row["response"]["output"]]  # type: ignore[index]
        assert kinds == (["message"] if text else ["function_call"])
    calls = [item for item in collected[0]["response"]["output"] if item["type"] == "function_call"]  # type: ignore[index]
    assert [(call["name"], orjson.loads(call["arguments"])) for call in calls] == [("authenticate_user", AUTHENTICATE)]
    (entry,) = orjson.loads((tmp_path / "tool_use_aggregate_metrics.json").read_bytes())
    assert entry["agent_metrics"]["mean/reward"] == pytest.approx(2 / len(given))


@pytest.mark.parametrize(("environment", "agent"), [(GYMNASIUM, GYMNASIUM_AGENT), (TOOL_USE, TOOL_USE_AGENT)])
def test_golden_replay_through_the_agent(tree: Path, tmp_path: Path, environment: str, agent: str) -> None:
    """The model answers each call with the turn NeMo Gym recorded for the row; the agent and the environment
    then give the rewards NeMo Gym recorded."""
    cases = golden_cases(tree / f"resources_servers/{environment}/data")
    assert cases, f"{environment} has no recorded rollouts joining its example rows"
    examples = tmp_path / "examples.jsonl"
    # The example rows as NeMo Gym sent them (the recorded request), without the recorded answer: the model has it.
    sent = [{key: value for key, value in case.request.items() if key != "response"} for case in cases]
    examples.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in sent))
    output = tmp_path / "replayed.jsonl"
    with RecordedModel([case.request for case in cases]) as model:
        overrides = [f"++policy_base_url={model.base_url}", "++policy_api_key=none", "++policy_model_name=recorded"]
        with GymProcess(ROOT, [config_of(tree, environment), OPENAI_MODEL], overrides,
                        log_path=tmp_path / "ng_run.log").start(300) as gym:  # fmt: skip
            gym.collect(f"+agent_name={agent}", f"+input_jsonl_fpath={examples}", f"+output_jsonl_fpath={output}")
        assert not model.unmatched, f"calls the recording does not hold: {model.unmatched[:3]}"
    assert [row["reward"] for row in rows(output)] == [case.reward for case in cases]
