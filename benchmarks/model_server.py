"""The model server alone: one `vllm_model` process started by ng_run, in front of the vLLM stand-in.

Three modes: `plain` (no token data), `token_info` (training config on the chat path: one chat completion per
turn) and `token_exact` (training config on the token-exact path: render, generate, derender per turn). Each
posts two requests: the simple_weather first turn, and a second turn whose history carries the first turn's
answer (with its token data in the token modes, so the exact path splices). For each mode, turn and
concurrency, the load generator first drives the stand-in directly with the Chat body the model server sends
(its own ceiling on this machine; not for token_exact, whose three dependent calls one fixed body cannot
replay), then the model server.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.loadgen import LoadResult, LoadSpec, run_in_subprocess
from benchmarks.procs import StandinProcess, instance_pids, peak_rss_mib
from ngym.protocol.options import ConversionOptions
from ngym.protocol.requests import responses_to_chat_request
from ngym.protocol.tokens import TOKEN_FIELDS, add_token_request_flags
from testkit.gym_process import GymProcess
from testkit.tiny_model import SERVED_MODEL_NAME

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = "policy_model"
PLAIN_CONFIG = "responses_api_models/vllm_model/configs/vllm_model.yaml"
TRAINING_CONFIG = "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml"
TOKEN_EXACT_KEY = "policy_model.responses_api_models.vllm_model.token_exact"
METRICS_KEY = "policy_model.responses_api_models.vllm_model.metrics"
EXAMPLE_ROWS = ROOT / "resources_servers/simple_weather/data/example.jsonl"
SECOND_USER_MESSAGE = "Thanks. And what's it like in nyc?"
TURNS = ("first", "second")


@dataclass(frozen=True)
class Mode:
    name: str
    config_path: str
    token_exact: str | None = None  # the token_exact override (training config only)
    metrics: bool = True  # false: the model server serves no /metrics and measures nothing (the overhead's baseline)

    @property
    def token_info(self) -> bool:
        """Answers carry token IDs and log-probs."""
        return self.config_path == TRAINING_CONFIG

    @property
    def exact(self) -> bool:
        """On the token-exact path: `require` makes the server refuse to start without the token endpoints."""
        return self.token_exact == "require"

    @property
    def overrides(self) -> list[str]:
        found = [] if self.token_exact is None else [f"++{TOKEN_EXACT_KEY}={self.token_exact}"]
        return found if self.metrics else [*found, f"++{METRICS_KEY}=false"]


MODES = {
    mode.name: mode
    for mode in (
        Mode("plain", PLAIN_CONFIG),
        Mode("plain_no_metrics", PLAIN_CONFIG, metrics=False),
        Mode("token_info", TRAINING_CONFIG, "never"),
        Mode("token_exact", TRAINING_CONFIG, "require"),
    )
}


@dataclass(frozen=True)
class Settings:
    concurrencies: tuple[int, ...] = (16, 64, 256, 1024)
    modes: tuple[str, ...] = tuple(name for name in MODES if name != "plain_no_metrics")
    turns: tuple[str, ...] = TURNS
    warmup_s: float = 1.5
    duration_s: float = 5.0
    results_dir: Path = ROOT / "benchmarks" / "results"


def simple_weather_request() -> dict[str, Any]:
    """The first row of the simple_weather example, as the agent sends it to /v1/responses."""
    with EXAMPLE_ROWS.open() as rows:
        params: dict[str, Any] = json.loads(rows.readline())["responses_create_params"]
    return params


def second_turn_request(first: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The next request of the same conversation: the first turn's input, the answer's output items as they
    came back (token data included), and a new user message. Built once, from one real answer."""
    return {**first, "input": [*first["input"], *answer["output"], {"role": "user", "content": SECOND_USER_MESSAGE}]}


def request_for(mode: Mode, request: dict[str, Any]) -> dict[str, Any]:
    """What an agent in `mode` sends: without token data in plain mode (its answers never had any)."""
    if mode.token_info:
        return request
    items = [{k: v for k, v in item.items() if k not in TOKEN_FIELDS} for item in request["input"]]
    return {**request, "input": items}


def upstream_chat_body(request: dict[str, Any], token_info: bool) -> bytes:
    """What the model server sends to vLLM's /v1/chat/completions for request (the chat path): the stand-in's
    own load is measured with it. The conversion leaves the token flags to the model server, which adds them
    last (after its overrides); the training config has no overrides, so conversion + flags is the whole body."""
    options = ConversionOptions(return_token_id_information=token_info)
    body = responses_to_chat_request(request, SERVED_MODEL_NAME, options)
    if token_info:
        add_token_request_flags(body)
    return orjson.dumps(body)


def gym_overrides(standin: StandinProcess) -> list[str]:
    return [
        f"++policy_base_url={standin.base_url}",
        "++policy_api_key=x",
        f"++policy_model_name={SERVED_MODEL_NAME}",
    ]


@contextmanager
def model_server(standin: StandinProcess, mode: Mode, log_path: Path) -> Iterator[tuple[str, int]]:
    """ng_run with only the model server's config; yields its URL and the pid of its process. In mode
    token_exact the server refuses to start unless every vLLM server serves the token endpoints."""
    overrides = [*gym_overrides(standin), *mode.overrides]
    with GymProcess(ROOT, [mode.config_path], overrides, log_path=log_path) as gym:
        assert gym.process is not None
        yield gym.url_of(INSTANCE), instance_pids(gym.process.pid)[INSTANCE]


def check_answer(url: str, request: dict[str, Any], mode: Mode, previous: dict[str, Any] | None = None) -> Any:
    """One request before any load: the server answers what the benchmark thinks it answers. `previous`: the
    answer whose output the request's history carries; on the exact path the new prompt must begin with its
    prompt + generated IDs (the splice ran; the chat path's re-rendering does not give that on the stand-in).
    Returns the answer."""
    data = orjson.dumps(request)
    post = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(post, timeout=10) as answer:
        reply = json.loads(answer.read())
    messages = [item for item in reply.get("output", []) if item.get("type") == "message"]
    if not messages:
        raise RuntimeError(f"{url} answered without a message: {reply}")
    if mode.token_info and "generation_token_ids" not in messages[-1]:
        raise RuntimeError(f"{url} answered without token information: {messages[-1]}")
    if mode.exact and previous is not None:
        earlier = previous["output"][-1]
        expected = earlier["prompt_token_ids"] + earlier["generation_token_ids"]
        if messages[-1]["prompt_token_ids"][: len(expected)] != expected:
            raise RuntimeError(f"{url}: the second turn's prompt does not begin with the first turn's tokens")
    return reply


def point_row(
    target: str, mode: str, turn: str, result: LoadResult, server_label: str, rss_mib: float | None
) -> dict[str, Any]:
    return {
        "target": target,
        "mode": mode,
        "turn": turn,
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


def run_order(modes: Sequence[str]) -> list[str]:
    """token_exact first: the second-turn request is built from its first answer, so that every mode's second
    turn carries token data the exact path really produced."""
    return sorted(modes, key=lambda name: (name != "token_exact", list(MODES).index(name)))


def display_key(row: dict[str, Any]) -> tuple[int, int, bool, int]:
    return (list(MODES).index(row["mode"]), TURNS.index(row["turn"]), row["target"] != "standin", row["concurrency"])


class Requests:
    """The first-turn request and, once a first answer is in, the second-turn one (shared by all modes)."""

    def __init__(self) -> None:
        self.first = simple_weather_request()
        self.second: dict[str, Any] | None = None
        self.second_from: dict[str, Any] | None = None  # the answer it was built from

    def checked(self, url: str, mode: Mode) -> dict[str, dict[str, Any]]:
        """Both turns for mode, each checked once against the running server at url."""
        answer = check_answer(url, self.first, mode)
        if self.second is None:
            self.second, self.second_from = second_turn_request(self.first, answer), answer
        check_answer(url, request_for(mode, self.second), mode, self.second_from)
        return {"first": self.first, "second": request_for(mode, self.second)}


def run(settings: Settings, log: Any = print) -> list[dict[str, Any]]:
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    body_file = settings.results_dir / "loadgen-body.json"
    requests = Requests()
    rows: list[dict[str, Any]] = []
    with StandinProcess(log_path=settings.results_dir / "standin.log") as standin:
        for name in run_order(settings.modes):
            mode = MODES[name]
            with model_server(standin, mode, settings.results_dir / f"ng_run-{name}.log") as (url, pid):
                responses_url = url + "/v1/responses"
                bodies = requests.checked(responses_url, mode)
                for turn in settings.turns:
                    request = bodies[turn]
                    # The model server is up but idle here: it sends nothing unless a vLLM server is down.
                    for concurrency in () if mode.exact else settings.concurrencies:
                        chat_body = upstream_chat_body(request, mode.token_info)
                        spec = LoadSpec(standin.base_url + "/chat/completions", chat_body, concurrency,
                                        settings.warmup_s, settings.duration_s, {"standin": standin.pid})  # fmt: skip
                        result = run_in_subprocess(spec, body_file)
                        rows.append(point_row("standin", name, turn, result, "standin", None))
                        log(f"  stand-in direct  {name:11} {turn:6} c={concurrency:<5} "
                            f"{rows[-1]['requests_per_s']:>8.0f} req/s")  # fmt: skip
                    for concurrency in settings.concurrencies:
                        watch = {"server": pid, "standin": standin.pid}
                        body = orjson.dumps(request)
                        spec = LoadSpec(responses_url, body, concurrency, settings.warmup_s, settings.duration_s, watch)
                        result = run_in_subprocess(spec, body_file)
                        rows.append(point_row("model_server", name, turn, result, "server", peak_rss_mib(pid)))
                        row = rows[-1]
                        log(
                            f"  model server     {name:11} {turn:6} c={concurrency:<5} "
                            f"{row['requests_per_s']:>8.0f} req/s  {row['server_cpu_s_per_1000']:.3f} CPU-s/1000"
                        )
    return sorted(rows, key=display_key)
