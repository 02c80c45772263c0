"""The viewer's live view of a run, in Chromium: with `+head_server.port`, its Gym view shows the running ng_run's
servers and points at the saturated vLLM (a model server in front of two vLLM stand-ins, one of which holds
every request it gets); the live line shows the collector's progress file (state, done/expected, rate, ETA)."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from testkit.gym_process import GymProcess
from testkit.standin.script import Hold, StandinScript
from testkit.standin.server import StandinServer
from tests.browser.conftest import ROOT, start_viewer

pytestmark = pytest.mark.browser

WAIT_MS = 30_000  # a hang guard for what the page loads, not a timing assertion
MODEL_CONFIG = "responses_api_models/vllm_model/configs/vllm_model.yaml"
CHAT = json.dumps({"messages": [{"role": "user", "content": "Weather in SF?"}]}).encode()
PROGRESS = {"schema": "ngym.collect_progress", "version": 1, "state": "running", "expected": 4000, "done": 1530,
            "rate": {"recent": 42.5, "overall": 40.0, "window_s": 30}, "eta_s": 125.0}  # fmt: skip


def chat(url: str) -> int:
    request = urllib.request.Request(url + "/v1/chat/completions", CHAT, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return int(answer.status)


def test_the_gym_view_points_at_the_saturated_vllm(page: Any, artifacts: Path, tmp_path: Path) -> None:
    hold = Hold()
    rollouts = tmp_path / "out.jsonl"
    (tmp_path / "out.progress.json").write_text(json.dumps(PROGRESS))
    with StandinServer(StandinScript()) as fast, StandinServer(StandinScript()) as slow:
        overrides = [f"++policy_base_url=[{fast.base_url}, {slow.base_url}]", "++policy_api_key=none",
                     f"++policy_model_name={fast.script.model}"]  # fmt: skip
        with GymProcess(ROOT, [MODEL_CONFIG], overrides, log_path=tmp_path / "ng_run.log") as gym:
            viewer = start_viewer(f"+jsonl_fpath={rollouts}", f"+head_server.port={gym.head_port}")
            try:
                slow.script.down = hold  # from now on every request it gets waits
                with ThreadPoolExecutor(max_workers=6) as pool:
                    calls = [pool.submit(chat, gym.url_of("policy_model")) for _ in range(6)]
                    hold.wait_for_held(1)
                    page.goto(f"{viewer.url}/?view=gym")
                    busiest = page.locator('[data-testid="vllm-busiest"]')
                    busiest.wait_for(timeout=WAIT_MS)
                    assert slow.base_url in busiest.inner_text()
                    assert fast.base_url in page.locator('[data-testid="vllm-row"]').inner_text()
                    assert page.locator('#nav a[data-view="gym"]').is_visible()
                    progress = page.locator('[data-testid="live-progress"]')
                    progress.wait_for(timeout=WAIT_MS)
                    assert progress.inner_text().strip() == "· collector running 1,530/4,000 · 42.5/s · ETA 2m05s"
                    page.screenshot(path=str(artifacts / "gym.png"), full_page=True)
                    slow.script.down = None
                    hold.release()
                    assert [call.result() for call in calls] == [200] * 6
            finally:
                page.goto("about:blank")  # the view polls its gym: leave it before the viewer stops
                assert viewer.stop() == 0
