"""The agent loop on our family templates (tests/data/templates), through `ng_run` with NeMo Gym's
`vllm_model_for_training.yaml` unchanged, simple_weather and its simple_agent, on the session's real vLLM.

A small config file of the test's adds what NeMo Gym's file leaves to the user: the chat template (sent with
each request), `token_exact: require`, a forced tool call each turn (structured outputs: the tiny model has random
weights) and two agent steps. Rollouts must come back token-exact (each turn's prompt is the previous prompt +
generated IDs + vLLM's render of what followed), none filed as a failure; a template that cannot be spliced must
stop ng_run before any rollout, naming what the template does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ngym.config.errors import ConfigError
from ngym.protocol.options import ConversionOptions
from ngym.protocol.requests import responses_to_chat_request
from ngym.protocol.splice_ids import with_family_call_ids
from ngym.rollouts.output import failures_path
from ngym.vllm.process import VllmServer
from testkit.forcing import literal_regex
from testkit.gym_process import GymProcess
from testkit.token_turns import broken_turns, response_turns

pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parents[2]
TRAINING_CONFIG = "tests/data/nemo_gym_configs/vllm_model_for_training.yaml"
WEATHER_CONFIG = "resources_servers/simple_weather/configs/simple_weather.yaml"
EXAMPLE = "resources_servers/simple_weather/data/example.jsonl"
TEMPLATES = ROOT / "tests" / "data" / "templates"
TOOL_CALL = '</think><tool_call>\n{"name": "get_weather", "arguments": {"city": "sf"}}\n</tool_call>'
ROLLOUTS = 3


def settings_file(tmp_path: Path, family: str) -> str:
    settings = {
        "policy_model": {"responses_api_models": {"vllm_model": {
            "token_exact": "require",
            "extra_body": {"chat_template": (TEMPLATES / f"{family}.jinja").read_text(),
                           "structured_outputs": {"regex": literal_regex(TOOL_CALL)}, "temperature": 0},
        }}},
        "simple_weather_simple_agent": {"responses_api_agents": {"simple_agent": {"max_steps": 2}}},
    }  # fmt: skip
    path = tmp_path / f"{family}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def gym(vllm: VllmServer, tmp_path: Path, family: str) -> GymProcess:
    overrides = [f"++policy_base_url={vllm.base_url}", "++policy_api_key=EMPTY",
                 f"++policy_model_name={vllm.model_name}"]  # fmt: skip
    paths = [TRAINING_CONFIG, WEATHER_CONFIG, settings_file(tmp_path, family)]
    return GymProcess(ROOT, paths, overrides, log_path=tmp_path / "ng_run.log")


def vllm_render(vllm: VllmServer, row: dict[str, Any], output: list[dict[str, Any]], template: str) -> list[int]:
    """vLLM's render of the rollout's history as the model server sends it (its conversion, 9-character IDs)."""
    params = row["responses_create_params"]
    chat = responses_to_chat_request({**params, "input": [*params["input"], *output]}, vllm.model_name,
                                     ConversionOptions())  # fmt: skip
    messages = with_family_call_ids([{k: v for k, v in m.items() if "token" not in k} for m in chat["messages"]])
    body = {"model": vllm.model_name, "messages": messages, "tools": chat["tools"], "chat_template": template}
    ids: list[int] = vllm.request("POST", "/v1/chat/completions/render", body).json()["token_ids"]
    return ids


def test_weather_rollouts_on_a_mistral_like_template_are_token_exact(vllm_server: VllmServer, tmp_path: Path) -> None:
    """Mistral-like: tool-call turns without their content, vLLM's hermes IDs refused by the template (written as
    9 characters by the model server), the system message gone once the conversation no longer ends with it."""
    output = tmp_path / "rollouts.jsonl"
    with gym(vllm_server, tmp_path, "mistral_like") as running:
        running.collect("+agent_name=simple_weather_simple_agent", f"+input_jsonl_fpath={EXAMPLE}",
                        f"+output_jsonl_fpath={output}", f"+limit={ROLLOUTS}")  # fmt: skip
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert not failures_path(output).exists() or failures_path(output).read_text() == ""
    assert len(rows) == ROLLOUTS
    template = (TEMPLATES / "mistral_like.jinja").read_text()
    end = vllm_server.request("POST", "/tokenize", {"model": vllm_server.model_name, "prompt": "<|im_end|>"})
    end_id = end.json()["tokens"][0]
    for row in rows:
        items = row["response"]["output"]
        turns = response_turns(items)
        assert len(turns) == 2 and broken_turns(turns) == [], items
        # Scored as a finished rollout: the forced tool calls (for SF) never answer, so the verifier gives 0.
        assert row["reward"] == 0.0 and row["called_city"] == "sf" and row["reason"], row
        second = next(i for i, item in enumerate(items) if item["type"] == "function_call_output") + 1
        full = vllm_render(vllm_server, row, items[:second], template)
        seen = [*turns[0].prompt_token_ids, *turns[0].generation_token_ids]
        cuts = [i for i, token in enumerate(full) if token == end_id]
        assert turns[1].prompt_token_ids == seen + full[cuts[seen.count(end_id) - 1] + 1 :]


def test_ng_run_refuses_a_gpt_oss_like_template_before_any_rollout(vllm_server: VllmServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ng_run exited") as info:
        gym(vllm_server, tmp_path, "gpt_oss_like").start()
    message = " ".join(str(info.value).split())
    assert "token_exact: require" in message
    assert "when it is the last message but with other tokens when more messages follow it" in message
