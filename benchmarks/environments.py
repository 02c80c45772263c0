"""`python -m benchmarks environments`: try every CPU-deterministic NeMo Gym environment of the package on ngym.

For each resources server whose requirements all come from the package registry and whose configs name no judge
model (the survey's data), one after another: install its venv (bounded), start it as ng_run would (bounded), and
golden-replay its recorded rows (bounded between rows). The results are merged by environment into
benchmarks/results/environments.json (so a sweep can be run in parts) and written as a markdown table into
docs/environments.md between the markers below.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ngym.nemo_gym_envs.golden import golden_cases
from ngym.nemo_gym_envs.replay import replay_case, rewards_match, running_environment
from ngym.nemo_gym_envs.survey import ServerSurvey, survey_tree

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = ROOT / "benchmarks" / "results" / "environments.json"
DOC = ROOT / "docs" / "environments.md"
BEGIN = "<!-- environments table: python -m benchmarks environments (begin) -->"
END = "<!-- environments table (end) -->"
_INSTALL = (
    "import sys\nfrom pathlib import Path\nfrom ngym.nemo_gym_envs.venvs import environment_python\n"
    "try:\n    print(environment_python(Path(sys.argv[1]), sys.argv[2], show=lambda _t: None))\n"
    "except Exception as exc:\n    print(f'{type(exc).__name__}: {exc}', file=sys.stderr)\n    sys.exit(1)\n"
)
_ERROR = re.compile(r"(?<![\w.])((?:[a-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit)\b.*)$")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Settings:
    names: tuple[str, ...] = ()  # empty: every candidate
    install_s: float = 120.0
    start_s: float = 60.0
    replay_s: float = 120.0  # no new row is replayed after this many seconds of replay
    skip_done: bool = False  # keep an environment's earlier result instead of trying it again


@dataclass
class EnvironmentResult:
    name: str
    installs: bool = False
    install_reason: str = ""
    starts: bool = False
    start_reason: str = ""
    tried: int = 0
    matched: int = 0
    seconds: float = 0.0
    mismatches: list[str] = field(default_factory=list)

    @property
    def fully_matched(self) -> bool:
        return self.starts and self.tried > 0 and self.matched == self.tried


def candidates(servers: list[ServerSurvey]) -> list[str]:
    """Servers whose requirements are registry-only and whose configs need no judge model."""
    return [s.name for s in servers if s.registry_only and not s.judge_in_config]


def try_environment(tree: Path, name: str, settings: Settings, log: Log) -> EnvironmentResult:
    """Install, start and golden-replay one environment, each step bounded; never raises."""
    result = EnvironmentResult(name)
    started = time.monotonic()
    try:
        result.installs, result.install_reason = _install(tree, name, settings.install_s)
        if result.installs:
            _start_and_replay(tree, name, settings, result)
    finally:
        result.seconds = round(time.monotonic() - started, 1)
    return result


def _install(tree: Path, name: str, limit_s: float) -> tuple[bool, str]:
    folder = tree / "resources_servers" / name
    process = subprocess.Popen(
        [sys.executable, "-c", _INSTALL, str(folder), name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _, errors = process.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return False, f"install took over {limit_s:g} s"
    if process.returncode != 0:
        return False, short_reason(errors)
    return True, ""


def _start_and_replay(tree: Path, name: str, settings: Settings, result: EnvironmentResult) -> None:
    cases = golden_cases(tree / "resources_servers" / name / "data")
    pool = ThreadPoolExecutor(1)  # a row's requests run here, so a verify that never answers is left behind
    try:
        with running_environment(tree, name, ready_timeout_s=settings.start_s) as env:
            result.starts = True
            replay_started = time.monotonic()
            for case in cases:
                left = settings.replay_s - (time.monotonic() - replay_started)
                if left <= 0:
                    result.mismatches.append(f"replay stopped after {settings.replay_s:g} s")
                    break
                result.tried += 1
                try:
                    got: Any = pool.submit(replay_case, env.url, case).result(timeout=left).get("reward")
                except FutureTimeout:
                    got = f"no answer within {settings.replay_s:g} s of replay"
                except Exception as exc:
                    got = f"error: {short_reason(str(exc))}"
                if rewards_match(case.reward, got):
                    result.matched += 1
                else:
                    result.mismatches.append(f"row {case.index}: recorded {case.reward}, got {str(got)[:300]}")
    except Exception as exc:
        if not result.starts:
            result.start_reason = short_reason(str(exc))
        else:
            result.mismatches.append(f"error: {short_reason(str(exc))}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def short_reason(text: str) -> str:
    """One line for a table: the last exception line of a traceback or log, else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        found = _ERROR.search(line)
        if found:
            return found.group(1)[:200]
    if lines and lines[0].startswith("InstallError:"):
        return lines[0].removeprefix("InstallError: ")[:200]
    return (lines[-1] if lines else "no output")[:200]


def run(tree: Path, settings: Settings, log: Log) -> list[EnvironmentResult]:
    """Try the environments one at a time, saving the merged results after each; the results sorted by name (all
    saved ones when names are given, else those of the current candidates)."""
    names = list(settings.names) or candidates(survey_tree(tree))
    saved = load_results()
    if not settings.names:  # a full sweep: forget environments that are no longer candidates
        saved = {name: result for name, result in saved.items() if name in names}
        save_results(saved)
    for index, name in enumerate(names, 1):
        if settings.skip_done and name in saved:
            continue
        log(f"[{index}/{len(names)}] {name}")
        result = try_environment(tree, name, settings, log)
        log(f"    {describe(result)}")
        saved[name] = result
        save_results(saved)
    return [saved[name] for name in sorted(saved) if settings.names or name in names]


def describe(result: EnvironmentResult) -> str:
    if not result.installs:
        return f"install failed: {result.install_reason} ({result.seconds:g} s)"
    if not result.starts:
        return f"start failed: {result.start_reason} ({result.seconds:g} s)"
    return f"matched {result.matched}/{result.tried} ({result.seconds:g} s) {'; '.join(result.mismatches)[:400]}"


def load_results(path: Path = RESULTS_JSON) -> dict[str, EnvironmentResult]:
    if not path.is_file():
        return {}
    return {row["name"]: EnvironmentResult(**row) for row in json.loads(path.read_text())["environments"]}


def save_results(results: dict[str, EnvironmentResult], path: Path = RESULTS_JSON) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [asdict(results[name]) for name in sorted(results)]
    path.write_text(json.dumps({"environments": rows, "totals": totals(list(results.values()))}, indent=2) + "\n")


def totals(results: list[EnvironmentResult]) -> dict[str, int]:
    return {
        "tried": len(results),
        "installed": sum(r.installs for r in results),
        "started": sum(r.starts for r in results),
        "with_recorded_rows": sum(r.starts and r.tried > 0 for r in results),
        "fully_matched": sum(r.fully_matched for r in results),
    }


def table(results: list[EnvironmentResult]) -> str:
    """The markdown table: environment, installs, starts, matched / tried, seconds; then the totals."""
    lines = ["| environment | installs | starts | matched / tried | seconds |", "| --- | --- | --- | --- | --- |"]
    for r in sorted(results, key=lambda r: r.name):
        installs = "yes" if r.installs else f"no: {_cell(r.install_reason)}"
        starts = "yes" if r.starts else ("—" if not r.installs else f"no: {_cell(r.start_reason)}")
        replayed = f"{r.matched}/{r.tried}" if r.starts else "—"
        if r.starts and not r.tried:
            replayed = "no recorded rows"
        lines.append(f"| {r.name} | {installs} | {starts} | {replayed} | {r.seconds:g} |")
    t = totals(results)
    lines += [
        "",
        f"Tried {t['tried']}, installed {t['installed']}, started {t['started']}, "
        f"{t['with_recorded_rows']} with recorded rows, {t['fully_matched']} matching every recorded reward.",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_table(doc: Path, text: str) -> None:
    """Replace what lies between the markers in `doc` with `text` (the markers appended when missing)."""
    content = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    block = f"{BEGIN}\n\n{text}\n\n{END}"
    if BEGIN in content and END in content:
        head, rest = content.split(BEGIN, 1)
        content = head + block + rest.split(END, 1)[1]
    else:
        content = content.rstrip("\n") + ("\n\n" if content else "") + block + "\n"
    doc.write_text(content, encoding="utf-8")
