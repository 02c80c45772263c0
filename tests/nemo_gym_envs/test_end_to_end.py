"""A NeMo Gym user's commands, unchanged, on ngym: `ng_run` with NeMo Gym's own `mcqa.yaml` (from nemo-gym 0.7.0's
files, fetched at test time into the git-ignored cache) and ngym's `vllm_model.yaml` on the vLLM stand-in, then
`ng_collect_rollouts` over mcqa's `example.jsonl`: the rewards mcqa's verifier gives, and the aggregate metrics
mcqa computes written beside the output as NeMo Gym writes them. `pytest -m nemo_gym_envs` selects it."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from testkit.gym_process import GymProcess
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer

pytestmark = pytest.mark.nemo_gym_envs

ROOT = Path(__file__).resolve().parents[2]
MODEL_CONFIG = "responses_api_models/vllm_model/configs/vllm_model.yaml"


@pytest.fixture(scope="module")
def mcqa_gym(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GymProcess]:
    """One ng_run for the module: mcqa on the stand-in, which answers every question with \\boxed{B}."""
    log = tmp_path_factory.mktemp("mcqa") / "ng_run.log"
    with StandinServer(StandinScript(reply_text="The answer is \\boxed{B}")) as standin:
        overrides = [f"++policy_base_url={standin.base_url}", "++policy_api_key=none",
                     f"++policy_model_name={standin.script.model}"]  # fmt: skip
        config = str(tree / "resources_servers/mcqa/configs/mcqa.yaml")
        with GymProcess(ROOT, [config, MODEL_CONFIG], overrides, log_path=log).start(timeout=300) as gym:
            yield gym


def rows(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_mcqa_rollouts_and_aggregate_metrics(mcqa_gym: GymProcess, tree: Path, tmp_path: Path) -> None:
    examples = tree / "resources_servers/mcqa/data/example.jsonl"
    output = tmp_path / "mcqa.jsonl"
    done = mcqa_gym.collect("+agent_name=mcqa_simple_agent", f"+input_jsonl_fpath={examples}",
                            f"+output_jsonl_fpath={output}")  # fmt: skip
    collected = sorted(rows(output), key=lambda row: int(row["_ng_task_index"]))  # type: ignore[call-overload]
    expected = [orjson.loads(line)["expected_answer"] for line in examples.read_bytes().splitlines()]
    assert [row["reward"] for row in collected] == [1.0 if answer == "B" else 0.0 for answer in expected]
    assert all(row["extracted_answer"] == "B" for row in collected)

    metrics_file = tmp_path / "mcqa_aggregate_metrics.json"
    assert f"aggregate metrics: {metrics_file}" in done.stdout
    (entry,) = orjson.loads(metrics_file.read_bytes())
    assert entry["agent_ref"] == {"name": "mcqa_simple_agent"}
    share = 100.0 * expected.count("B") / len(expected)
    agent = entry["agent_metrics"]
    assert agent["mean/reward"] == pytest.approx(share / 100)
    assert agent["pass@1/accuracy"] == pytest.approx(share) and agent["majority@1/accuracy"] == pytest.approx(share)
    assert agent["pass@1/no_answer"] == 0.0 and agent["num_repeats"] == 1
    # mcqa's own get_key_metrics chose these.
    assert set(entry["key_metrics"]) == {
        "mean/reward", "pass@1[avg-of-1]/accuracy", "pass@1[avg-of-1]/no_answer", "pass@1/no_answer",
        "majority@1/accuracy", "pass@1/accuracy",
    }  # fmt: skip
    assert [group["_ng_task_index"] for group in entry["group_level_metrics"]] == list(range(len(expected)))


def test_disable_aggregation_writes_no_metrics(mcqa_gym: GymProcess, tree: Path, tmp_path: Path) -> None:
    examples = tree / "resources_servers/mcqa/data/example.jsonl"
    output = tmp_path / "mcqa.jsonl"
    mcqa_gym.collect("+agent_name=mcqa_simple_agent", f"+input_jsonl_fpath={examples}",
                     f"+output_jsonl_fpath={output}", "+limit=2", "+disable_aggregation=true")  # fmt: skip
    assert len(rows(output)) == 2
    assert not (tmp_path / "mcqa_aggregate_metrics.json").exists()


def test_the_environment_answers_only_to_its_own_host_names(mcqa_gym: GymProcess) -> None:
    """As every ngym server: a page re-pointed at 127.0.0.1 (DNS rebinding) or of another site gets a 403."""
    url = mcqa_gym.url_of("mcqa")
    port = url.rsplit(":", 1)[1]
    for headers in ({"Host": f"evil.example:{port}"}, {"Origin": "http://evil.example"}):
        request = urllib.request.Request(url + "/verify", data=b"{}", headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403
        assert orjson.loads(refused.value.read())["error"]["code"] == "host_not_allowed"
    with urllib.request.urlopen(url + "/health", timeout=30) as answer:  # its own name: served
        assert answer.status == 200


# The stand-in calls the tool row 0 of workplace_assistant's example.jsonl expects, with its arguments, on every row.
REPLY_TO_CARLOS = {"email_id": "00000057", "body": "Thanks for the update - I will get back to you tomorrow."}


def test_workplace_assistant_rollouts_and_aggregate_metrics(tree: Path, tmp_path: Path) -> None:
    script = StandinScript(tool_call_mode=True, tool_name="email_reply_email", tool_arguments=REPLY_TO_CARLOS,
                           tool_answer_text="Done.")  # fmt: skip
    examples = tree / "resources_servers/workplace_assistant/data/example.jsonl"
    config = str(tree / "resources_servers/workplace_assistant/configs/workplace_assistant.yaml")
    output = tmp_path / "workplace.jsonl"
    with StandinServer(script) as standin:
        overrides = [f"++policy_base_url={standin.base_url}", "++policy_api_key=none",
                     f"++policy_model_name={standin.script.model}"]  # fmt: skip
        with GymProcess(ROOT, [config, MODEL_CONFIG], overrides, log_path=tmp_path / "ng_run.log").start(300) as gym:
            gym.collect("+agent_name=workplace_assistant_simple_agent", f"+input_jsonl_fpath={examples}",
                        f"+output_jsonl_fpath={output}")  # fmt: skip
    collected = sorted(rows(output), key=lambda row: int(row["_ng_task_index"]))  # type: ignore[call-overload]
    count = len(examples.read_bytes().splitlines())
    assert [row["reward"] for row in collected] == [1.0] + [0.0] * (count - 1)
    (entry,) = orjson.loads((tmp_path / "workplace_aggregate_metrics.json").read_bytes())
    assert entry["agent_ref"] == {"name": "workplace_assistant_simple_agent"}
    assert entry["agent_metrics"]["mean/reward"] == pytest.approx(1 / count)
    assert entry["key_metrics"]["mean/reward"] == pytest.approx(1 / count)
