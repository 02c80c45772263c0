"""`ng_status` points at the saturated vLLM: a model server in front of two vLLM stand-ins, one of which holds
every request it gets (a slowed-down server); while requests are held there, ng_status marks that one busiest
with ngym's requests in flight on it, and `--json` carries the same per-vLLM view. The vLLM-side figures (running,
waiting, KV cache) of real vLLM are tests/integration/test_vllm_model_real.py's."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from testkit.gym_process import GymProcess, console_script
from testkit.standin.script import Hold, StandinScript
from testkit.standin.server import StandinServer

ROOT = Path(__file__).resolve().parents[2]
MODEL_CONFIG = "responses_api_models/vllm_model/configs/vllm_model.yaml"
CHAT = json.dumps({"messages": [{"role": "user", "content": "Weather in SF?"}]}).encode()


def chat(url: str) -> int:
    request = urllib.request.Request(url + "/v1/chat/completions", CHAT, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return int(answer.status)


def in_flight(line: str) -> int:
    found = re.search(r"ngym: (\d+) in flight", line)
    assert found, line
    return int(found.group(1))


def ng_status(gym: GymProcess, *flags: str) -> str:
    done = subprocess.run([console_script("ng_status"), f"+head_server.port={gym.head_port}", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout


def test_ng_status_marks_the_vllm_that_holds_the_requests(tmp_path: Path) -> None:
    hold = Hold()
    with StandinServer(StandinScript()) as fast, StandinServer(StandinScript()) as slow:
        overrides = [f"++policy_base_url=[{fast.base_url}, {slow.base_url}]", "++policy_api_key=none",
                     f"++policy_model_name={fast.script.model}"]  # fmt: skip
        with GymProcess(ROOT, [MODEL_CONFIG], overrides, log_path=tmp_path / "ng_run.log") as gym:
            url = gym.url_of("policy_model")
            slow.script.down = hold  # from now on every request it gets waits
            with ThreadPoolExecutor(max_workers=6) as pool:
                calls = [pool.submit(chat, url) for _ in range(6)]
                hold.wait_for_held(1)
                text = ng_status(gym)
                view: list[dict[str, Any]] = next(
                    server["vllm_servers"] for server in json.loads(ng_status(gym, "--json"))
                    if server["name"] == "policy_model"
                )  # fmt: skip
                slow.script.down = None
                hold.release()
                assert [call.result() for call in calls] == [200] * 6
    lines = {line.split()[1]: line for line in text.splitlines() if line.startswith("  vLLM ")}
    assert set(lines) == {fast.base_url, slow.base_url}
    assert lines[slow.base_url].endswith("<- busiest") and "busiest" not in lines[fast.base_url]
    assert in_flight(lines[slow.base_url]) >= 1 and in_flight(lines[fast.base_url]) == 0
    assert "vLLM: no /metrics (HTTP 404)" in lines[fast.base_url]  # the stand-in serves none; real vLLM does
    by_url = {entry["url"]: entry for entry in view}
    assert by_url[slow.base_url]["in_flight"] >= 1 and by_url[fast.base_url]["in_flight"] == 0
    assert by_url[slow.base_url]["in_rotation"] and by_url[fast.base_url]["in_rotation"]
