"""`make demo`: the seed's flow, end to end, on an embedded default.

Starts a real vLLM (CPU build, hermes tool parser) on the trained weather policy in models/weather-policy
(`make policy` rebuilds it), runs the seed's `ng_run` with `vllm_model.yaml` + `simple_weather.yaml` pointed
at it, runs the seed's `ng_collect_rollouts` (+limit=10), prints the summary and one rollout, and stops
everything it started.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ngym.testing.gym_process import SEED_CONFIG_PATHS, GymProcess
from ngym.testing.vllm_server import VllmServer, find_vllm_python

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "models" / "weather-policy"
POLICY_NAME = "weather-policy"
OUTPUT = "results/vllm_rollouts.jsonl"


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
    if not (POLICY_DIR / "model.safetensors").is_file():
        print(f"demo: no trained policy in {POLICY_DIR}; run `make policy` to train one", file=sys.stderr)
        return 1
    print(
        f"demo: starting vLLM (CPU build) on {POLICY_DIR.relative_to(ROOT)}; this takes about half a minute", flush=True
    )
    vllm_log = ROOT / ".cache" / "vllm-demo.log"
    vllm_log.parent.mkdir(exist_ok=True)
    with VllmServer(POLICY_DIR, python=vllm_python, served_model_name=POLICY_NAME, log_path=vllm_log) as vllm:
        print(f"demo: vLLM is serving {vllm.model_name} at {vllm.base_url}", flush=True)
        overrides = [
            f"++policy_base_url={vllm.base_url}",
            "++policy_api_key=none",
            f"++policy_model_name={vllm.model_name}",
        ]
        gym = GymProcess(ROOT, SEED_CONFIG_PATHS, overrides)
        print(f"demo: ng_run {' '.join(gym.args)}", flush=True)
        with gym:
            collect = [
                "+agent_name=simple_weather_simple_agent",
                "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
                f"+output_jsonl_fpath={OUTPUT}",
                "+limit=10",
                "+overwrite=true",
            ]
            print(f"demo: ng_collect_rollouts {' '.join(collect)}", flush=True)
            result = gym.collect(*collect, check=False)
            print(result.stdout, end="")
            if result.returncode != 0:
                print(result.stderr[-3000:], file=sys.stderr)
            _show_rollout(ROOT / OUTPUT)
    print(f"demo: done; rollouts are in {OUTPUT}; everything it started is stopped")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
