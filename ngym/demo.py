"""`make demo`: the seed's flow, end to end, on an embedded default.

Generates a tiny model if absent, starts a real vLLM (CPU build) on it, runs the seed's `ng_run` with
`vllm_model.yaml` + `simple_weather.yaml` pointed at it, runs the seed's `ng_collect_rollouts` (+limit=10),
prints the summary and one rollout, and stops everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ngym.testing.tiny_model import ensure_tiny_model
from ngym.testing.vllm_server import VllmServer, find_vllm_python, free_port

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / ".cache" / "tiny-model"
CONFIG_PATHS = (
    "responses_api_models/vllm_model/configs/vllm_model.yaml, "
    "resources_servers/simple_weather/configs/simple_weather.yaml"
)
OUTPUT = "results/vllm_rollouts.jsonl"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _wait_for_servers(head_port: int, ng_run: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ng_run.poll() is not None:
            raise SystemExit(f"demo: ng_run exited with code {ng_run.returncode} before its servers were ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{head_port}/servers", timeout=2) as answer:
                servers = json.loads(answer.read())
            if all(_healthy(server["url"]) for server in servers):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"demo: ng_run's servers were not ready within {timeout:.0f} s")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _show_rollout(path: Path) -> None:
    with path.open() as rows:
        first = rows.readline()
    if not first:
        return
    row: dict[str, Any] = json.loads(first)
    print("\nOne rollout (the model's turns, tool calls and outputs, then the verifier's verdict):")
    for item in row["response"]["output"]:
        kind = item.get("type")
        if kind == "message":
            text = "".join(part.get("text", "") for part in item.get("content", []))
            print(f"  assistant: {text[:300]!r}")
        elif kind == "function_call":
            print(f"  tool call: {item['name']}({item['arguments']})")
        elif kind == "function_call_output":
            print(f"  tool output: {item['output'][:300]}")
        elif kind == "reasoning":
            text = " ".join(part.get("text", "") for part in item.get("summary", []))
            print(f"  reasoning: {text[:300]!r}")
    print(f"  reward: {row['reward']} ({row.get('reason', '')})")


def main() -> int:
    vllm_python = find_vllm_python(ROOT)
    if vllm_python is None:
        print("demo: no vLLM venv at .venv-vllm; run `make setup` first", file=sys.stderr)
        return 1
    print("demo: preparing the tiny model in .cache/tiny-model", flush=True)
    model_dir = ensure_tiny_model(MODEL_DIR, vllm_python)
    print("demo: starting vLLM (CPU build) on it; this takes about half a minute", flush=True)
    with VllmServer(
        model_dir, python=vllm_python, served_model_name="tiny-qwen2", log_path=ROOT / ".cache" / "vllm-demo.log"
    ) as vllm:
        vllm.start()
        print(f"demo: vLLM is serving {vllm.model_name} at {vllm.base_url}", flush=True)
        head_port = free_port()
        overrides = [
            f"+config_paths=[{CONFIG_PATHS}]",
            f"++policy_base_url={vllm.base_url}",
            "++policy_api_key=none",
            f"++policy_model_name={vllm.model_name}",
            f"+head_server.port={head_port}",
        ]
        print(f"demo: ng_run {' '.join(repr(o) for o in overrides)}", flush=True)
        ng_run = subprocess.Popen([_bin("ng_run"), *overrides], cwd=ROOT)
        try:
            _wait_for_servers(head_port, ng_run)
            collect = [
                _bin("ng_collect_rollouts"),
                "+agent_name=simple_weather_simple_agent",
                "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
                f"+output_jsonl_fpath={OUTPUT}",
                "+limit=10",
                "+overwrite=true",
                f"+head_server.port={head_port}",
            ]
            print(f"demo: {' '.join(collect[1:])}", flush=True)
            status = subprocess.call(collect, cwd=ROOT)
            _show_rollout(ROOT / OUTPUT)
        finally:
            ng_run.send_signal(signal.SIGINT)
            try:
                ng_run.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(ng_run.pid, signal.SIGKILL)
    print(f"demo: done; rollouts are in {OUTPUT}")
    return status


if __name__ == "__main__":
    sys.exit(main())
