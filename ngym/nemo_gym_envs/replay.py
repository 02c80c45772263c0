"""Start one NeMo Gym environment as ng_run would (its own venv, our `nemo_gym`), without ng_run, and replay its
recorded rollouts against it: `/seed_session` with the row, each recorded tool call in order (same session
cookie), then `/verify` with the recorded response, compared with the recorded reward (a Gymnasium-style
environment: `/reset`, then `/step` with each of the model's recorded turns, the rewards summed).

Used by the golden-replay tests and `python -m ngym.nemo_gym_envs.replay NAME...` (prints matched / tried and
each environment's start-up time and memory).
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from omegaconf import OmegaConf

from ngym.http.app import bind_socket
from ngym.lifetime import child_env
from ngym.nemo_gym_envs.golden import GoldenCase, golden_cases
from ngym.nemo_gym_envs.output_tail import READER_EXIT_S, OutputTail
from ngym.nemo_gym_envs.package import ensure_package
from ngym.nemo_gym_envs.venvs import environment_python

READY_TIMEOUT_S = 120.0


@dataclass
class RunningEnvironment:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    startup_s: float
    output: OutputTail  # its output so far (read all along: a chatty environment never blocks on its pipe)

    def rss_mib(self) -> float:
        """Resident memory of the environment's process, from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


@contextlib.contextmanager
def running_environment(
    tree: Path, name: str, section: dict[str, Any] | None = None, ready_timeout_s: float = READY_TIMEOUT_S
) -> Iterator[RunningEnvironment]:
    """The environment `resources_servers/<name>` of `tree`, serving on a free loopback port until the block ends
    (an error when it does not answer /health within `ready_timeout_s`)."""
    folder = tree / "resources_servers" / name
    section = {**config_section(folder, name), **(section or {})}
    python = environment_python(folder, name, show=lambda _text: None)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    launch = {
        "instance": name,
        "server_type": "resources_servers",
        "implementation": name,
        "section": {"entrypoint": "app.py", **section, "host": "127.0.0.1", "port": port},
        "settings": {},
        "directory": {},
    }
    command = [str(python), "-m", "ngym.nemo_gym_envs.serve", "--instance", name, "--fd", str(sock.fileno()),
               "--tree", str(tree), "--folder", str(folder)]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        pass_fds=(sock.fileno(),), env=child_env(), start_new_session=True,
    )  # fmt: skip
    sock.close()
    assert process.stdin is not None
    process.stdin.write(orjson.dumps(launch))
    process.stdin.close()
    assert process.stdout is not None
    output = OutputTail(process.stdout, name)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(process, output, url, name, ready_timeout_s)
        yield RunningEnvironment(name, url, process, time.monotonic() - started, output)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.close()


def config_section(folder: Path, name: str) -> dict[str, Any]:
    """The environment's own section (its instance of resources_servers/<name>) in `configs/<name>.yaml`, else in
    the first of its config files that has one, `${oc.env:...}` interpolations resolved as ng_run resolves them (a
    value that cannot be resolved here, such as one naming the run's other settings, is kept as written)."""
    own = folder / "configs" / f"{name}.yaml"
    for path in [own, *sorted(p for p in (folder / "configs").glob("*.yaml") if p != own)]:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        for value in (loaded or {}).values() if isinstance(loaded, dict) else ():
            section = (value or {}).get("resources_servers", {}).get(name) if isinstance(value, dict) else None
            if isinstance(section, dict):
                return {key: _resolved(key, item) for key, item in section.items()}
    return {}


def _resolved(key: str, value: Any) -> Any:
    try:
        resolved = OmegaConf.to_container(OmegaConf.create({key: value}), resolve=True)
        return resolved[key] if isinstance(resolved, dict) else value
    except Exception:
        return value


def _wait_ready(process: subprocess.Popen[bytes], output: OutputTail, url: str, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = output.text(wait_s=READER_EXIT_S)
            raise RuntimeError(f"{name} exited with {process.returncode} before it was ready; its last output:\n{said}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.1)  # a short wait on the process itself: returns at once if it dies
    raise RuntimeError(f"{name} did not answer /health within {timeout_s:g} s; its last output:\n{output.text()}")


class Session:
    """One rollout's HTTP session with the environment: its cookies carried from call to call."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url + path, data=orjson.dumps(body), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with self.opener.open(request, timeout=120) as answer:
                return answer.status, orjson.loads(answer.read())
        except urllib.error.HTTPError as error:
            raw = error.read()
            with contextlib.suppress(orjson.JSONDecodeError):
                return error.code, orjson.loads(raw)
            return error.code, raw.decode(errors="replace")


def replay_case(url: str, case: GoldenCase) -> dict[str, Any]:
    """Seed, replay the recorded tool calls, verify; the verify answer."""
    session = Session(url)
    status, seeded = session.post("/seed_session", case.request)
    if status == 404:  # no sessions: a Gymnasium-style environment, when it has /reset
        reset_status, reset = session.post("/reset", _run_body(case))
        if reset_status == 200:
            return replay_steps(session, case)
        if reset_status != 404:
            raise RuntimeError(f"/reset answered {reset_status}: {str(reset)[:2000]}")
    if status != 200:
        raise RuntimeError(f"/seed_session answered {status}: {seeded}")
    for item in case.request["response"].get("output") or []:
        if isinstance(item, dict) and item.get("type") == "function_call":
            try:
                arguments = orjson.loads(item.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                arguments = {}
            session.post(f"/{item['name']}", arguments)  # a tool's error is the model's to see, as in the rollout
    status, verified = session.post("/verify", case.request)
    if status != 200 or not isinstance(verified, dict):
        raise RuntimeError(f"/verify answered {status}: {str(verified)[:2000]}")
    return verified


def replay_steps(session: Session, case: GoldenCase) -> dict[str, Any]:
    """A Gymnasium-style environment (`/reset`, `/step`, driven by NeMo Gym's gymnasium_agent), already reset: the
    recorded output split into the model's turns (what lies between the environment's tool outputs and
    observations), each posted to `/step` as that turn's response until the episode ends; the summed reward."""
    recorded = case.request["response"]
    total = 0.0
    answer: Any = {}
    turn: list[Any] = []
    turns: list[list[Any]] = []
    for item in recorded.get("output") or []:
        from_environment = isinstance(item, dict) and (
            item.get("type") == "function_call_output" or item.get("role") == "user"
        )
        if from_environment and turn:
            turns.append(turn)
            turn = []
        elif not from_environment:
            turn.append(item)
    turns += [turn] if turn else []
    for output in turns:
        status, answer = session.post("/step", {**_run_body(case), "response": {**recorded, "output": output}})
        if status != 200 or not isinstance(answer, dict):
            raise RuntimeError(f"/step answered {status}: {str(answer)[:2000]}")
        total += float(answer.get("reward") or 0.0)
        if answer.get("terminated") or answer.get("truncated"):
            break
    return {**answer, "reward": total}


def _run_body(case: GoldenCase) -> dict[str, Any]:
    return {key: value for key, value in case.request.items() if key != "response"}


def rewards_match(recorded: float, got: Any) -> bool:
    return isinstance(got, int | float) and math.isclose(float(got), recorded, rel_tol=1e-6, abs_tol=1e-6)


@dataclass
class ReplayResult:
    name: str
    cases: int
    matched: int
    startup_s: float
    rss_mib: float
    mismatches: list[str]


def replay_environment(tree: Path, name: str) -> ReplayResult:
    cases = golden_cases(tree / "resources_servers" / name / "data")
    with running_environment(tree, name) as env:
        mismatches = []
        for case in cases:
            try:
                got = replay_case(env.url, case).get("reward")
            except RuntimeError as exc:
                got = f"error: {exc}"
            if not rewards_match(case.reward, got):
                mismatches.append(f"row {case.index}: recorded {case.reward}, got {str(got)[:300]}")
        return ReplayResult(name, len(cases), len(cases) - len(mismatches), env.startup_s, env.rss_mib(), mismatches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--tree", type=Path)
    args = parser.parse_args(argv)
    tree = args.tree or ensure_package()
    failed = 0
    for name in args.names:
        try:
            result = replay_environment(tree, name)
        except Exception as exc:
            print(f"{name}: {type(exc).__name__}: {exc}")
            failed += 1
            continue
        print(f"{name}: matched {result.matched}/{result.cases}; start-up {result.startup_s:.2f} s; "
              f"{result.rss_mib:.0f} MiB resident")  # fmt: skip
        for line in result.mismatches:
            print(f"    {line}")
        failed += result.matched != result.cases
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
