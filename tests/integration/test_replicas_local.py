"""Replicas of local processes, and Ray left alone without a cluster (issue 16).

vLLM is the scripted stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from ngym.http.probe import answers
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer

ROOT = Path(__file__).resolve().parents[2]
WEATHER = "simple_weather.resources_servers.simple_weather"


def test_local_replicas_each_listen_and_without_a_cluster_ray_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A `ray` that tells on whoever imports it, first on the path of ng_run and of every server it starts.
    fake = tmp_path / "fake" / "ray"
    fake.mkdir(parents=True)
    marker = tmp_path / "ray-was-imported"
    (fake / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\nraise ImportError('not this one')\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    log = tmp_path / "ng_run.log"
    output = tmp_path / "out.jsonl"
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        settings = [
            f"++policy_base_url={standin.base_url}",
            "++policy_api_key=x",
            f"++policy_model_name={standin.script.model}",
            f"++{WEATHER}.num_replicas=2",
        ]
        with GymProcess(ROOT, SEED_CONFIG_PATHS, settings, log_path=log) as gym:
            weather = next(s for s in gym.servers() if s["name"] == "simple_weather")
            assert len(weather["urls"]) == 2 and weather["url"] == weather["urls"][0]
            assert all(answers(url) for url in weather["urls"])
            gym.collect(
                "+agent_name=simple_weather_simple_agent",
                "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
                f"+output_jsonl_fpath={output}",
            )
    text = log.read_text()
    assert "simple_weather#0 " in text and "simple_weather#1 " in text
    assert len(output.read_text().splitlines()) == 10
    assert not any(answers(url) for url in weather["urls"])
    assert not marker.exists(), "ng_run or one of its servers imported Ray without ray_head_node_address"
