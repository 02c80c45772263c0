"""The model server alone: one `vllm_model` process started by ng_run, in front of the vLLM stand-in.

For each mode (plain; token information on) and each concurrency, the load generator first drives the
stand-in directly (its own ceiling on this machine), then the model server with the simple_weather request.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.loadgen import LoadResult, LoadSpec, run_in_subprocess
from benchmarks.procs import StandinProcess, instance_pids, peak_rss_mib
from ngym.protocol.convert import ConversionOptions, responses_to_chat_request
from ngym.testing.gym_process import GymProcess
from ngym.testing.tiny_model import SERVED_MODEL_NAME

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = "policy_model"
MODE_CONFIGS = {
    "plain": "responses_api_models/vllm_model/configs/vllm_model.yaml",
    "token_info": "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml",
}
EXAMPLE_ROWS = ROOT / "resources_servers/simple_weather/data/example.jsonl"


@dataclass(frozen=True)
class Settings:
    concurrencies: tuple[int, ...] = (16, 64, 256, 1024)
    warmup_s: float = 1.5
    duration_s: float = 5.0
    results_dir: Path = ROOT / "benchmarks" / "results"


def simple_weather_request() -> dict[str, Any]:
    """The first row of the simple_weather example, as the agent sends it to /v1/responses."""
    with EXAMPLE_ROWS.open() as rows:
        params: dict[str, Any] = json.loads(rows.readline())["responses_create_params"]
    return params


def upstream_chat_body(request: dict[str, Any], token_info: bool) -> bytes:
    """What the model server sends to vLLM for request: the stand-in's own load is measured with it."""
    options = ConversionOptions(return_token_id_information=token_info)
    return orjson.dumps(responses_to_chat_request(request, SERVED_MODEL_NAME, options))


def gym_overrides(standin: StandinProcess) -> list[str]:
    return [
        f"++policy_base_url={standin.base_url}",
        "++policy_api_key=x",
        f"++policy_model_name={SERVED_MODEL_NAME}",
    ]


@contextmanager
def model_server(standin: StandinProcess, config_path: str, log_path: Path) -> Iterator[tuple[str, int]]:
    """ng_run with only the model server's config; yields its URL and the pid of its process."""
    with GymProcess(ROOT, [config_path], gym_overrides(standin), log_path=log_path) as gym:
        assert gym.process is not None
        yield gym.url_of(INSTANCE), instance_pids(gym.process.pid)[INSTANCE]


def check_answer(url: str, body: bytes, token_info: bool) -> None:
    """One request before any load: the server answers what the benchmark thinks it answers."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        reply = json.loads(answer.read())
    messages = [item for item in reply.get("output", []) if item.get("type") == "message"]
    if not messages:
        raise RuntimeError(f"{url} answered without a message: {reply}")
    if token_info and "generation_token_ids" not in messages[-1]:
        raise RuntimeError(f"{url} answered without token information: {messages[-1]}")


def point_row(target: str, mode: str, result: LoadResult, server_label: str, rss_mib: float | None) -> dict[str, Any]:
    return {
        "target": target,
        "mode": mode,
        "concurrency": result.concurrency,
        "requests_per_s": round(result.requests_per_s, 1),
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "completed": result.completed,
        "errors": result.errors,
        "first_error": result.first_error,
        "server_cpu_s_per_1000": round(result.cpu_s_per_1000(server_label), 4),
        # What the server alone could answer with one core to itself: the machine's other work aside.
        "server_requests_per_cpu_s": round(result.completed / cpu) if (cpu := result.cpu_s[server_label]) else None,
        "standin_cpu_s_per_1000": round(result.cpu_s_per_1000("standin"), 4),
        "loadgen_cpu_s_per_1000": round(result.cpu_s_per_1000("loadgen"), 4),
        "peak_rss_mib": None if rss_mib is None else round(rss_mib, 1),
    }


def run(settings: Settings, log: Any = print) -> list[dict[str, Any]]:
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    body_file = settings.results_dir / "loadgen-body.json"
    request = orjson.dumps(simple_weather_request())
    rows: list[dict[str, Any]] = []
    with StandinProcess(log_path=settings.results_dir / "standin.log") as standin:
        for mode, config_path in MODE_CONFIGS.items():
            token_info = mode == "token_info"
            chat_body = upstream_chat_body(simple_weather_request(), token_info)
            for concurrency in settings.concurrencies:
                spec = LoadSpec(
                    standin.base_url + "/chat/completions",
                    chat_body,
                    concurrency,
                    settings.warmup_s,
                    settings.duration_s,
                    {"standin": standin.pid},
                )
                rows.append(point_row("standin", mode, run_in_subprocess(spec, body_file), "standin", None))
                log(f"  stand-in direct  {mode:10} c={concurrency:<5} {rows[-1]['requests_per_s']:>8.0f} req/s")
            with model_server(standin, config_path, settings.results_dir / f"ng_run-{mode}.log") as (url, pid):
                responses_url = url + "/v1/responses"
                check_answer(responses_url, request, token_info)
                for concurrency in settings.concurrencies:
                    watch = {"server": pid, "standin": standin.pid}
                    spec = LoadSpec(responses_url, request, concurrency, settings.warmup_s, settings.duration_s, watch)
                    result = run_in_subprocess(spec, body_file)
                    rows.append(point_row("model_server", mode, result, "server", peak_rss_mib(pid)))
                    row = rows[-1]
                    log(
                        f"  model server     {mode:10} c={concurrency:<5} {row['requests_per_s']:>8.0f} req/s"
                        f"  {row['server_cpu_s_per_1000']:.3f} CPU-s/1000"
                    )
    return rows
