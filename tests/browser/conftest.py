"""Fixtures of the browser tests: headless Chromium driven by Playwright, real rollout files made by the seed
flow, and `ng_viewer` serving them. Without Chromium, Playwright or vLLM the tests skip; in CI (`CI` set) they
fail instead, as tests/integration does for vLLM: `make setup` installs all three."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from ngym.vllm.process import find_vllm_python
from testkit.gym_process import console_script
from tests.browser.rollout_files import HELDOUT, POLICY_DIR, make_rollout_files

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / ".artifacts" / "viewer"  # screenshots, kept after the run (git-ignored)
CACHE = ROOT / ".cache" / "viewer-rollouts"


def missing(what: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {what} (make setup installs it)")
    pytest.skip(f"{what} (make setup installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread while it is open, and
    every async test after it would fail ("Runner.run() cannot be called from a running event loop")."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright is not installed in .venv")
    if not CHROMIUM.is_file():
        missing(f"{CHROMIUM} is absent (Debian's chromium package)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; a script error on it fails the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    yield tab
    context.close()
    assert errors == [], errors


def _cache_key() -> str:
    digest = hashlib.sha256()
    for path in (Path(__file__).with_name("rollout_files.py"), HELDOUT, POLICY_DIR / "model.safetensors"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def rollout_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """hot.jsonl (temperature 2) and cool.jsonl (temperature 1) with their failures and summary files. Made once
    per machine (.cache/viewer-rollouts/<key>): vLLM runs only while they are made."""
    done = CACHE / _cache_key()
    if not (done / "complete").is_file():
        python = find_vllm_python(ROOT)
        if python is None:
            missing(f"real vLLM is not installed ({ROOT / '.venv-vllm/bin/python'})")
        work = tmp_path_factory.mktemp("rollouts")
        make_rollout_files(work, python, work)
        shutil.rmtree(done, ignore_errors=True)
        shutil.copytree(work, done)
        (done / "complete").touch()
    return {name: done / name for name in ("hot.jsonl", "cool.jsonl")}


@dataclass
class RunningViewer:
    url: str
    process: subprocess.Popen[str]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_viewer(*args: str) -> RunningViewer:
    """The real `ng_viewer` command, on a free port."""
    process = subprocess.Popen(
        [console_script("ng_viewer"), *args, "+port=0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if " at http://" not in line:
        process.kill()
        raise RuntimeError(f"ng_viewer did not start: {line!r}")
    return RunningViewer(line.split(" at ")[1].split(" ")[0].rstrip("/"), process)


@pytest.fixture(scope="session")
def viewer(rollout_files: dict[str, Path]) -> Iterator[RunningViewer]:
    running = start_viewer(
        f"+jsonl_fpath={rollout_files['hot.jsonl']}",
        f"+compare_jsonl_fpath={rollout_files['cool.jsonl']}",
        f"+tokenizer={POLICY_DIR}",
    )
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
