"""OpenTelemetry traces of rollouts (`+otel_traces=<dir>` on ng_run): the agent writes one trace per rollout, a
`rollout` span with the task and rollout indices and, under it, a span per call (seed_session, each model call,
each tool call, verify), read back from its JSON-lines file as the SDK wrote it. The vLLM stand-in makes one
tool call a rollout."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "resources_servers/simple_weather/data/example.jsonl"


def spans_in(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in directory.glob("*.jsonl") for line in path.read_text().splitlines() if line]


def test_one_trace_per_rollout_with_a_span_per_call(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        overrides = [f"++policy_base_url={standin.base_url}", "++policy_api_key=none",
                     f"++policy_model_name={standin.script.model}", f"+otel_traces={traces}"]  # fmt: skip
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=tmp_path / "ng_run.log") as gym:
            gym.collect("+agent_name=simple_weather_simple_agent", f"+input_jsonl_fpath={EXAMPLE}", "+limit=3",
                        "+num_repeats=2", f"+output_jsonl_fpath={tmp_path / 'out.jsonl'}")  # fmt: skip
    (agent_file,) = traces.glob("simple_weather_simple_agent-*.jsonl")
    spans = spans_in(traces)
    rollouts = [span for span in spans if span["name"] == "rollout"]
    indices = sorted(
        (span["attributes"]["ngym.task_index"], span["attributes"]["ngym.rollout_index"]) for span in rollouts
    )
    assert indices == [(task, rollout) for task in range(3) for rollout in range(2)]
    assert len({span["context"]["trace_id"] for span in rollouts}) == 6  # one trace per rollout
    children: dict[str, list[str]] = defaultdict(list)
    for span in spans:
        if span["name"] != "rollout":
            children[span["parent_id"]].append(span["name"])
    for rollout in rollouts:
        names = children[rollout["context"]["span_id"]]
        assert sorted(names) == sorted(["seed_session", "model call", "tool call /get_weather", "model call", "verify"])
    assert all(span["resource"]["attributes"]["service.name"] == "simple_weather_simple_agent" for span in spans)
    assert agent_file.stat().st_size > 0
