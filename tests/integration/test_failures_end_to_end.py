"""Issue 12, end to end through the real commands: every failure named and classified, no input crashes a server,
a bad task is never retried as an outage, and a run against a dead vLLM stops early and resumes whole.

- vLLM killed (real vLLM, the weather policy) while ng_collect_rollouts runs: the run stops on its own with one
  message naming the class and the last error; vLLM restarted, the same command completes the rest.
- Malformed bodies of our own (testkit.malformed) on every route of a running ng_run (stand-in upstream).
- 2000 task rows, one with a number as its input: recorded once as an invalid task, the other 1999 finished.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from ngym.http.app import serve_in_background
from ngym.vllm.process import VllmServer, free_port
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess, console_script
from testkit.malformed import Case, corpus
from testkit.relay import Relay, Rewrite
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer

ROOT = Path(__file__).resolve().parents[2]
POLICY_DIR = ROOT / "models" / "weather-policy"
POLICY = "weather-policy"
EXAMPLE = ROOT / "resources_servers" / "simple_weather" / "data" / "example.jsonl"
AGENT = "simple_weather_simple_agent"
MODEL = "policy_model"
RESOURCES = "simple_weather"
EXIT_SOME_FAILED = 3
HANG_GUARD_S = 60.0  # per request: a hang guard, not a timing assertion


def resume_key(row: dict[str, Any]) -> tuple[int, int]:
    """(task, repeat) of an output or failure row: NeMo Gym's top-level `_ng_task_index` / `_ng_rollout_index`,
    or ngym's earlier `_ngym: {task_index, repeat_index}`."""
    if "_ng_task_index" in row:
        return int(row["_ng_task_index"]), int(row["_ng_rollout_index"])
    meta = row["_ngym"]
    return int(meta["task_index"]), int(meta["repeat_index"])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, which must end with a whole line (model text may hold U+2028: not splitlines)."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends with a partial line"
    return [orjson.loads(line) for line in data.split(b"\n") if line]


def write_tasks(path: Path, count: int, bad_index: int | None = None) -> None:
    """`count` distinct rows cycling through the seed's examples (a `task_id` field keeps identical lines apart,
    so each row is its own task under NeMo Gym's indexing too); the row at `bad_index` has a number as its input."""
    examples = [json.loads(line) for line in EXAMPLE.read_text().splitlines() if line]
    rows = [{**examples[i % len(examples)], "task_id": i} for i in range(count)]
    if bad_index is not None:
        params = {**rows[bad_index]["responses_create_params"], "input": 7}
        rows[bad_index] = {**rows[bad_index], "responses_create_params": params}
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))


def standin_overrides(standin: StandinServer) -> list[str]:
    return [
        f"++policy_base_url={standin.base_url}",
        "++policy_api_key=sk-do-not-print",
        f"++policy_model_name={standin.script.model}",
    ]


# -- 1. vLLM killed while a single-base_url collection runs ----------------------------------------------------


def start_policy_vllm(vllm_python: Path, port: int, log: Path) -> VllmServer:
    server = VllmServer(POLICY_DIR, python=vllm_python, port=port, served_model_name=POLICY, log_path=log)
    return server.start()


def wait_for_rows(output: Path, rows: int, collector: subprocess.Popen[bytes], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout  # a hang guard
    while time.monotonic() < deadline:
        if output.is_file() and output.read_bytes().count(b"\n") >= rows:
            return
        assert collector.poll() is None, f"the collector exited ({collector.returncode}) before {rows} rows"
        time.sleep(0.05)
    raise AssertionError(f"fewer than {rows} rows in {output} after {timeout:.0f} s")


@pytest.mark.vllm
def test_vllm_killed_mid_run_stops_the_collection_and_the_same_command_completes_it(
    vllm_python: Path, tmp_path: Path
) -> None:
    port = free_port()
    tasks, repeats = 150, 2
    output, task_file = tmp_path / "rollouts.jsonl", tmp_path / "tasks.jsonl"
    write_tasks(task_file, tasks)
    args = [
        f"+agent_name={AGENT}",
        f"+input_jsonl_fpath={task_file}",
        f"+output_jsonl_fpath={output}",
        f"+num_repeats={repeats}",
        "+num_samples_in_parallel=16",
        "+max_consecutive_failures=5",
    ]
    vllm = start_policy_vllm(vllm_python, port, tmp_path / "vllm-1.log")
    try:
        overrides = [f"++policy_base_url={vllm.base_url}", "++policy_api_key=none", f"++policy_model_name={POLICY}"]
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=tmp_path / "ng_run.log") as gym:
            command = [console_script("ng_collect_rollouts"), *args, f"+head_server.port={gym.head_port}"]
            with (tmp_path / "collect-1.out").open("wb") as out, (tmp_path / "collect-1.err").open("wb") as err:
                collector = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err)
                try:
                    wait_for_rows(output, 10, collector)
                    assert vllm.pid is not None
                    os.killpg(vllm.pid, signal.SIGKILL)  # vLLM, its engine core and its watchdog at once
                    collector.wait(timeout=300)  # a hang guard: it must stop on its own
                finally:
                    if collector.poll() is None:
                        collector.kill()
            vllm.stop()
            stdout = (tmp_path / "collect-1.out").read_text()
            stderr = (tmp_path / "collect-1.err").read_text()
            assert collector.returncode == EXIT_SOME_FAILED, stdout + stderr
            assert re.search(r"failed (\d+) \(model \1\)", stdout), stdout

            stops = [line for line in stderr.splitlines() if "rollouts in a row failed" in line]
            assert len(stops) == 1, stderr
            assert "the last one: model (HTTP 502)" in stops[0], stops[0]
            assert f"vLLM at http://127.0.0.1:{port}/v1" in stops[0], "the last error names the dead vLLM"
            assert "run the same command again" in stops[0]

            first = read_jsonl(output)  # whole lines only
            done = [resume_key(row) for row in first]
            assert len(done) == len(set(done)) and 10 <= len(done) < tasks * repeats
            failures = read_jsonl(output.with_name("rollouts.failures.jsonl"))
            assert len(failures) >= 5 and {f["class"] for f in failures} == {"model"}, failures[:3]
            assert not {resume_key(f) for f in failures} & set(done)

            vllm = start_policy_vllm(vllm_python, port, tmp_path / "vllm-2.log")
            resumed = gym.collect(*args, check=False)
            assert resumed.returncode == 0, resumed.stdout + resumed.stderr
            assert f"(+{len(done)} from earlier runs)" in resumed.stdout
    finally:
        vllm.stop()
    rows = read_jsonl(output)
    keys = sorted(resume_key(row) for row in rows)
    assert keys == [(task, repeat) for task in range(tasks) for repeat in range(repeats)], "lost or duplicated"
    assert all(isinstance(row["reward"], float) for row in rows)
    failures_file = output.with_name("rollouts.failures.jsonl")
    assert not (failures_file.is_file() and failures_file.read_bytes()), "the resumed run had failures"


# -- 2. malformed bodies on every route --------------------------------------------------------------------------

TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CHAT_TOOL = {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}
PARAMS = {"input": [{"role": "user", "content": "what's it like in sf?"}], "tools": [TOOL], "max_output_tokens": 64}
ROW = {"responses_create_params": PARAMS, "expected_city": "sf"}
CHAT = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what's it like in sf?"}],
    "tools": [CHAT_TOOL],
    "max_tokens": 64,
    "temperature": 0.5,
}
RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "output": [
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "sf"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"weather_description": "sunny"}'},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
    ],
}


def routes(model: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(server, path, a valid body) for every POST route of the seed's three servers."""
    return [
        (MODEL, "/v1/responses", {**PARAMS, "model": model, "temperature": 0.5}),
        (MODEL, "/v1/chat/completions", {**CHAT, "model": model}),
        (AGENT, "/v1/responses", PARAMS),
        (AGENT, "/run", ROW),
        (RESOURCES, "/seed_session", ROW),
        (RESOURCES, "/verify", {**ROW, "response": RESPONSE}),
        (RESOURCES, "/get_weather", {"city": "sf"}),
    ]


def judge(status: int | None, body: bytes) -> str | None:
    """What is wrong with one answer to a malformed body, or None."""
    if status is None:
        return body.decode()
    if status >= 500:
        return f"HTTP {status}: {body[:300].decode(errors='replace')}"
    if status >= 400:
        try:
            error = orjson.loads(body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        if not isinstance(error, dict) or not isinstance(error.get("message"), str) or not error["message"]:
            return f"HTTP {status} not in the OpenAI error shape: {body[:300].decode(errors='replace')}"
    return None


async def send(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int | None, bytes]:
    try:
        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as answer:
            return answer.status, await answer.read()
    except TimeoutError:
        return None, f"no answer within {HANG_GUARD_S:.0f} s".encode()
    except aiohttp.ClientError as exc:
        return None, f"no answer: {type(exc).__name__}: {exc}".encode()


@pytest.fixture
def standin_gym(tmp_path: Path) -> Iterator[tuple[StandinServer, GymProcess]]:
    with StandinServer(StandinScript()) as standin:
        gym = GymProcess(ROOT, SEED_CONFIG_PATHS, standin_overrides(standin), log_path=tmp_path / "ng_run.log")
        with gym:
            yield standin, gym


async def test_malformed_bodies_on_every_route_get_a_clear_4xx_and_every_server_keeps_serving(
    standin_gym: tuple[StandinServer, GymProcess], tmp_path: Path
) -> None:
    standin, gym = standin_gym
    urls = {server["name"]: server["url"] for server in gym.servers()}
    sent = [(urls[server] + path, case) for server, path, body in routes(standin.script.model) for case in corpus(body)]
    slots = asyncio.Semaphore(8)
    timeout = aiohttp.ClientTimeout(total=HANG_GUARD_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(url: str, case: Case) -> tuple[int | None, bytes]:
            async with slots:
                return await send(http, url, case.body)

        answers = await asyncio.gather(*(one(url, case) for url, case in sent))
        health = {name: await send_get(http, url + "/health") for name, url in urls.items()}
        scored_status, scored = await send(http, urls[AGENT] + "/run", orjson.dumps(ROW))

    problems = [
        f"{url} [{case.name}]: {problem}"
        for (url, case), (status, body) in zip(sent, answers, strict=True)
        if (problem := judge(status, body)) is not None
    ]
    (tmp_path / "problems.txt").write_text("\n".join(problems))
    assert health == dict.fromkeys(urls, 200), "a server stopped answering /health"
    assert scored_status == 200 and isinstance(orjson.loads(scored)["reward"], float), scored[:500]
    log = (tmp_path / "ng_run.log").read_text()
    assert "Traceback" not in log, log[max(0, log.index("Traceback") - 300) :][:3000]
    assert not problems, f"{len(problems)} of {len(sent)} malformed bodies were mishandled:\n" + "\n".join(
        problems[:80]
    )


async def send_get(http: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with http.get(url) as answer:
            return answer.status
    except (TimeoutError, aiohttp.ClientError):
        return None


# -- 3. one invalid task among 2000 --------------------------------------------------------------------------------


def pointing_at(agent_relay_url: str) -> Rewrite:
    """A head-server answer rewrite: /servers lists the agent at the relay's address."""

    def rewrite(path: str, body: bytes) -> bytes:
        if path != "/servers":
            return body
        listing = orjson.loads(body)
        for server in listing:
            if server["name"] == AGENT:
                server["url"], server["urls"] = agent_relay_url, [agent_relay_url]
        return orjson.dumps(listing)

    return rewrite


async def test_one_invalid_task_in_2000_is_recorded_once_and_the_rest_finish(
    standin_gym: tuple[StandinServer, GymProcess], tmp_path: Path
) -> None:
    _standin, gym = standin_gym
    count, bad_index = 2000, 1234
    tasks, output = tmp_path / "tasks.jsonl", tmp_path / "out.jsonl"
    write_tasks(tasks, count, bad_index)
    agent = Relay(gym.url_of(AGENT))
    async with serve_in_background(agent.app()) as agent_url:
        head = Relay(f"http://127.0.0.1:{gym.head_port}", rewrite=pointing_at(agent_url))
        async with serve_in_background(head.app()) as head_url:
            command = [
                console_script("ng_collect_rollouts"),
                f"+agent_name={AGENT}",
                f"+input_jsonl_fpath={tasks}",
                f"+output_jsonl_fpath={output}",
                f"+head_server.port={head_url.rsplit(':', 1)[1]}",
            ]
            with (tmp_path / "collect.out").open("wb") as out, (tmp_path / "collect.err").open("wb") as err:
                collector = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=out, stderr=err)
                code = await asyncio.wait_for(collector.wait(), timeout=600)  # a hang guard
    stdout = (tmp_path / "collect.out").read_text()
    assert code == EXIT_SOME_FAILED, stdout + (tmp_path / "collect.err").read_text()[-3000:]
    assert "expected 2000, finished 1999, failed 1 (invalid_task 1), missing 0" in stdout

    failures = read_jsonl(output.with_name("out.failures.jsonl"))
    assert len(failures) == 1
    failure = failures[0]
    assert resume_key(failure) == (bad_index, 0)
    assert failure["class"] == "invalid_task" and 400 <= failure["status"] < 500, failure
    assert "input" in failure["error"], failure
    runs = [orjson.loads(body) for body in agent.bodies("/run")]
    assert len(runs) >= count  # a rollout whose connection dropped under load is retried; the invalid one never
    assert sum(run["responses_create_params"]["input"] == 7 for run in runs) == 1, "the invalid task was retried"

    keys = sorted(resume_key(row) for row in read_jsonl(output))
    assert keys == [(i, 0) for i in range(count) if i != bad_index]
