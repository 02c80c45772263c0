"""NeMo Gym's environments end to end on real vLLM (CPU build, the tiny random model): `ng_run` with the
environment's own config and ngym's `vllm_model.yaml`, then `ng_collect_rollouts` over its `example.jsonl`.

The tiny model babbles, so structured outputs (the model server's `extra_body`, set by a config file of the
test's own, as a user sets any key) narrow what it may say to the shapes the environment reads; which answer it
picks within them is the model's. Each test checks the environment's reward against what it was given: mcqa's
letter, workplace_assistant's tool calls run on its own state, and a judge's verdict through NeMo Gym's
`openai_model` (a judge model server named in the environment's config, pointed at vLLM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from ngym.vllm.process import VllmServer
from testkit.forcing import literal_regex
from testkit.gym_process import GymProcess

pytestmark = [pytest.mark.nemo_gym_envs, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[2]
MODEL_CONFIG = "responses_api_models/vllm_model/configs/vllm_model.yaml"
# With the deepseek_r1 reasoning parser the answer is what follows </think>.
MCQA_ANSWER = literal_regex("</think>The answer is \\boxed{") + "[ABCD]" + literal_regex("}")
FIND_CARLOS = (
    '<tool_call>\n{"name": "company_directory_find_email_address", "arguments": {"name": "carlos"}}\n</tool_call>'
)
SEARCH_EMAILS = '<tool_call>\n{"name": "email_search_emails", "arguments": {"query": "Task Update"}}\n</tool_call>'
VERDICT = literal_regex("</think>Judgement: ") + "(YES|NO)"


def policy_overrides(vllm: VllmServer) -> list[str]:
    return [f"++policy_base_url={vllm.base_url}", "++policy_api_key=EMPTY", f"++policy_model_name={vllm.model_name}"]


def settings_file(path: Path, sections: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(sections))
    return str(path)


def policy_extra_body(regex: str, **more: Any) -> dict[str, Any]:
    extra = {"structured_outputs": {"regex": regex}, **more}
    return {"policy_model": {"responses_api_models": {"vllm_model": {"extra_body": extra}}}}


def rows(path: Path) -> list[dict[str, Any]]:
    found = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return sorted(found, key=lambda row: int(row["_ng_task_index"]))


def answer_text(row: dict[str, Any]) -> str:
    messages = [item for item in row["response"]["output"] if item.get("type") == "message"]
    return "".join(part.get("text", "") for part in messages[-1]["content"]) if messages else ""


def test_mcqa_scores_the_letter_the_model_chose(vllm_server: VllmServer, tree: Path, tmp_path: Path) -> None:
    examples = tree / "resources_servers/mcqa/data/example.jsonl"
    configs = [str(tree / "resources_servers/mcqa/configs/mcqa.yaml"), MODEL_CONFIG,
               settings_file(tmp_path / "forced.yaml", policy_extra_body(MCQA_ANSWER))]  # fmt: skip
    output = tmp_path / "mcqa.jsonl"
    with GymProcess(ROOT, configs, policy_overrides(vllm_server), log_path=tmp_path / "ng_run.log").start(300) as gym:
        done = gym.collect("+agent_name=mcqa_simple_agent", f"+input_jsonl_fpath={examples}",
                           f"+output_jsonl_fpath={output}")  # fmt: skip
    collected = rows(output)
    expected = [orjson.loads(line)["expected_answer"] for line in examples.read_bytes().splitlines()]
    assert len(collected) == len(expected)
    for row, answer in zip(collected, expected, strict=True):
        chosen = answer_text(row).removeprefix("The answer is \\boxed{").removesuffix("}")
        assert chosen in "ABCD" and len(chosen) == 1, answer_text(row)
        assert row["extracted_answer"] == chosen
        assert row["reward"] == (1.0 if chosen == answer else 0.0)
    metrics_file = tmp_path / "mcqa_aggregate_metrics.json"
    assert f"aggregate metrics: {metrics_file}" in done.stdout
    (entry,) = orjson.loads(metrics_file.read_bytes())
    rewards = [row["reward"] for row in collected]
    assert entry["agent_metrics"]["mean/reward"] == pytest.approx(sum(rewards) / len(rewards))
    assert entry["agent_metrics"]["pass@1/accuracy"] == pytest.approx(100 * sum(rewards) / len(rewards))


def test_workplace_assistant_runs_the_models_tool_calls_on_its_state(
    long_context_vllm_server: VllmServer, tree: Path, tmp_path: Path
) -> None:
    """Each turn the model either calls one of two tools or stops; simple_agent runs the calls on the environment
    (max_steps 6 from the environment's config), and the reward is the environment's comparison of the state."""
    examples = tree / "resources_servers/workplace_assistant/data/example.jsonl"
    choice = f"</think>({literal_regex(FIND_CARLOS)}|{literal_regex(SEARCH_EMAILS)}|Done\\.)"
    configs = [str(tree / "resources_servers/workplace_assistant/configs/workplace_assistant.yaml"), MODEL_CONFIG,
               settings_file(tmp_path / "forced.yaml", policy_extra_body(choice, max_tokens=80))]  # fmt: skip
    output = tmp_path / "workplace.jsonl"
    overrides = policy_overrides(long_context_vllm_server)
    with GymProcess(ROOT, configs, overrides, log_path=tmp_path / "ng_run.log").start(300) as gym:
        gym.collect("+agent_name=workplace_assistant_simple_agent", f"+input_jsonl_fpath={examples}",
                    f"+output_jsonl_fpath={output}", "+limit=3")  # fmt: skip
    collected = rows(output)
    assert len(collected) == 3
    for row in collected:
        items = row["response"]["output"]
        calls = [item for item in items if item["type"] == "function_call"]
        results = {item["call_id"]: item["output"] for item in items if item["type"] == "function_call_output"}
        assert len(calls) <= 6 and {call["call_id"] for call in calls} == set(results)
        assert {call["name"] for call in calls} <= {"company_directory_find_email_address", "email_search_emails"}
        for call in calls:  # the environment's own tools answered, from its own data
            if call["name"] == "company_directory_find_email_address":
                assert "carlos" in results[call["call_id"]].lower()
        # None of the rows asks only for a lookup, so looking things up never completes a task.
        assert row["reward"] == 0.0
    (entry,) = orjson.loads((tmp_path / "workplace_aggregate_metrics.json").read_bytes())
    assert entry["agent_metrics"]["mean/reward"] == 0.0


@pytest.mark.parametrize("judge_route", ["chat_completions", "responses"])
def test_a_judge_named_in_the_environments_config_is_pointed_at_vllm(
    vllm_server: VllmServer, tree: Path, tmp_path: Path, judge_route: str
) -> None:
    """frontierscience_judge names `judge_model`, an `openai_model` server (NeMo Gym's judge default is NVIDIA's
    API); `+judge_base_url` points it at vLLM. The judge's verdict, forced to YES or NO and chosen by the model,
    is the reward; the judge is called on its chat route (the config's own) or on vLLM's /v1/responses."""
    examples = tree / "resources_servers/frontierscience_judge/data/example.jsonl"
    judge_extra = {"structured_outputs": {"regex": VERDICT}}
    server = {"judge_responses_create_params": {"input": [], "max_output_tokens": 60},
              "use_chat_completions_for_judge": judge_route == "chat_completions"}  # fmt: skip
    sections = {
        **policy_extra_body(literal_regex("</think>H2O")),
        "judge_model": {"responses_api_models": {"openai_model": {"extra_body": judge_extra}}},
        "frontierscience_judge": {"resources_servers": {"frontierscience_judge": server}},
    }
    configs = [str(tree / "resources_servers/frontierscience_judge/configs/frontierscience_judge.yaml"),
               MODEL_CONFIG, settings_file(tmp_path / "judge.yaml", sections)]  # fmt: skip
    overrides = [*policy_overrides(vllm_server), f"++judge_base_url={vllm_server.base_url}",
                 f"++judge_model_name={vllm_server.model_name}"]  # fmt: skip
    output = tmp_path / "judged.jsonl"
    with GymProcess(ROOT, configs, overrides, log_path=tmp_path / "ng_run.log").start(300) as gym:
        assert any(server["name"] == "judge_model" for server in gym.servers())
        gym.collect("+agent_name=frontierscience_judge_simple_agent", f"+input_jsonl_fpath={examples}",
                    f"+output_jsonl_fpath={output}", "+limit=3")  # fmt: skip
    collected = rows(output)
    assert len(collected) == 3
    for row in collected:
        assert row["extracted_answer"] == "H2O"
        assert row["judge_output"] in ("Judgement: YES", "Judgement: NO")
        assert row["verdict"] == row["judge_output"].rsplit(" ", 1)[1]
        assert row["reward"] == (1.0 if row["verdict"] == "YES" else 0.0)
