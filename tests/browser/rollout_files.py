"""Real rollout files for the viewer's browser tests, made by the seed flow: a real vLLM serving the weather
policy (models/weather-policy), the real `ng_run` in training mode (token IDs and log-probs) and the real
`ng_collect_rollouts`, twice over the same tasks at two temperatures (the files to compare).

The tasks: eight of the held-out cities, one whose expected city is not the one asked about (the verifier
gives every rollout 0: a zero-advantage group), one cut at 3 output tokens (incomplete), and one whose input is
not a conversation (refused: the failures file). Repeats: 4 per task.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ngym.vllm.process import VllmServer
from testkit.gym_process import GymProcess

ROOT = Path(__file__).resolve().parents[2]
POLICY_DIR = ROOT / "models" / "weather-policy"
HELDOUT = ROOT / "resources_servers" / "simple_weather" / "data" / "heldout.jsonl"
TRAINING_CONFIG_PATHS = (
    "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
)
AGENT = "simple_weather_simple_agent"
REPEATS = 4
RUNS = {"hot.jsonl": 2.0, "cool.jsonl": 1.0}  # output name: temperature (at 2 the policy errs, unevenly)


def write_tasks(path: Path) -> None:
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines()[:10]]
    rows[8]["expected_city"] = "Reykjavik"  # asked about another city: reward 0 whatever the policy does
    rows[9]["responses_create_params"]["max_output_tokens"] = 3  # cut mid tool call: incomplete
    invalid = {"responses_create_params": {"input": 7}, "expected_city": "nowhere"}  # refused: invalid_task
    with path.open("w") as handle:
        for row in [*rows, invalid]:
            handle.write(json.dumps(row) + "\n")


def make_rollout_files(out_dir: Path, vllm_python: Path, log_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = out_dir / "tasks.jsonl"
    write_tasks(tasks)
    with VllmServer(
        POLICY_DIR,
        python=vllm_python,
        served_model_name="weather-policy",
        log_path=log_dir / "vllm.log",
        extra_args=("--enable-scale-out",),
    ) as server:
        overrides = [
            f"++policy_base_url={server.base_url}",
            "++policy_api_key=none",
            f"++policy_model_name={server.model_name}",
        ]
        with GymProcess(ROOT, TRAINING_CONFIG_PATHS, overrides, log_path=log_dir / "ng_run.log") as gym:
            for name, temperature in RUNS.items():
                result = gym.collect(
                    f"+agent_name={AGENT}",
                    f"+input_jsonl_fpath={tasks}",
                    f"+output_jsonl_fpath={out_dir / name}",
                    f"+num_repeats={REPEATS}",
                    f"+responses_create_params.temperature={temperature}",
                    check=False,
                )
                if result.returncode not in (0, 3):  # 3: some rollouts failed, as the invalid task must
                    raise RuntimeError(
                        f"ng_collect_rollouts exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
                    )
    return {name: out_dir / name for name in RUNS}


if __name__ == "__main__":  # python -m tests.browser.rollout_files OUT_DIR: the files, to look at by hand
    from ngym.vllm.process import find_vllm_python

    python = find_vllm_python(ROOT)
    if python is None:
        sys.exit("real vLLM is not installed (.venv-vllm)")
    target = Path(sys.argv[1])
    print(make_rollout_files(target, python, target))
