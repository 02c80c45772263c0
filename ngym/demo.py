"""`make demo`: the user guide's two commands (docs/vllm_model.md), exactly as a user types them, on an embedded
default.

`ng_run` starts the model server as `local_vllm_model` with `weather_policy_cpu.yaml`: it launches vLLM's CPU
build on the trained weather policy in models/weather-policy (`make policy` rebuilds it) and serves exactly as
`vllm_model` does; then `ng_collect_rollouts +limit=10` collects, the summary and one rollout are shown, and
Ctrl-C stops ng_run, which stops vLLM.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ngym.api.process import NgRun
from ngym.config.errors import ConfigError
from ngym.vllm.process import find_vllm_python

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "models" / "weather-policy"
CONFIG_PATHS = (
    "responses_api_models/local_vllm_model/configs/weather_policy_cpu.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
)
OUTPUT = "results/vllm_rollouts.jsonl"
COLLECT = (
    "+agent_name=simple_weather_simple_agent",
    "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
    f"+output_jsonl_fpath={OUTPUT}",
    "+limit=10",
)
STARTUP_TIMEOUT_S = 900.0


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
    if find_vllm_python(ROOT) is None:
        print("demo: no vLLM venv at .venv-vllm; run `make setup` first", file=sys.stderr)
        return 1
    if not (POLICY_DIR / "model.safetensors").is_file():
        print(f"demo: no trained policy in {POLICY_DIR}; run `make policy` to train one", file=sys.stderr)
        return 1
    (ROOT / OUTPUT).unlink(missing_ok=True)  # a fresh demo each time, not a resumed one
    gym = NgRun([f"+config_paths=[{', '.join(CONFIG_PATHS)}]"], cwd=ROOT)
    print(f"demo: ng_run {' '.join(gym.args)}", flush=True)  # a free head port: a running gym is left alone
    print("demo: (it starts vLLM's CPU build on the weather policy; about half a minute)", flush=True)
    try:
        gym.start(timeout=STARTUP_TIMEOUT_S)
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    with gym:
        collect = [*COLLECT, f"+head_server.port={gym.head_port}"]
        print(f"demo: ng_collect_rollouts {' '.join(collect)}", flush=True)
        result = subprocess.run([sys.executable, "-m", "ngym.cli.collect", *collect], cwd=ROOT, check=False)
        _show_rollout(ROOT / OUTPUT)
        print("demo: Ctrl-C to ng_run (it stops its servers and the vLLM it started)", flush=True)
    print(f"demo: done; rollouts are in {OUTPUT}; everything it started is stopped")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
