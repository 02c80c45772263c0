"""Run the real `ng_run` command as a subprocess and wait until its servers are ready (demo and tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ngym.testing.vllm_server import free_port

SEED_CONFIG_PATHS = (
    "responses_api_models/vllm_model/configs/vllm_model.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
)


def console_script(name: str) -> str:
    """The path of one of ngym's commands in the running interpreter's environment."""
    return str(Path(sys.executable).parent / name)


class GymProcess:
    """`ng_run` with the given config files and overrides, on a free head-server port."""

    def __init__(
        self,
        root: Path,
        config_paths: Sequence[str],
        overrides: Sequence[str] = (),
        *,
        head_port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.root = root
        self.head_port = head_port or free_port()
        self.args = [f"+config_paths=[{', '.join(config_paths)}]", *overrides, f"+head_server.port={self.head_port}"]
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> GymProcess:
        output = self.log_path.open("wb") if self.log_path else None
        self.process = subprocess.Popen([console_script("ng_run"), *self.args], cwd=self.root, stdout=output,
                                        stderr=subprocess.STDOUT if output else None)  # fmt: skip
        if output:
            output.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ng_run exited with code {self.process.returncode} before it was ready"
                                   + self._log_tail())  # fmt: skip
            if self._ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"ng_run was not ready within {timeout:.0f} s" + self._log_tail())

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.head_port}/health", timeout=2) as answer:
                health = json.loads(answer.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return False
        # Another gym on this port is not this one (this ng_run then fails to bind the port and exits).
        assert self.process is not None
        return bool(health.get("ready")) and health.get("pid") == self.process.pid

    def _log_tail(self) -> str:
        if self.log_path and self.log_path.is_file():
            return ":\n" + self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def servers(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.head_port}/servers", timeout=5) as answer:
            result: list[dict[str, Any]] = json.loads(answer.read())
            return result

    def url_of(self, name: str) -> str:
        return next(str(s["url"]) for s in self.servers() if s["name"] == name)

    def collect(self, *args: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run ng_collect_rollouts against this ng_run; one that has not exited after `timeout` seconds is killed
        and its output shown."""
        command = [console_script("ng_collect_rollouts"), *args, f"+head_server.port={self.head_port}"]
        try:
            result = subprocess.run(command, cwd=self.root, capture_output=True, text=True, check=False,
                                    timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired as hung:
            raise RuntimeError(
                f"ng_collect_rollouts had not exited after {timeout:g} s and was killed; its output:\n"
                f"{_text(hung.stdout)}\n{_text(hung.stderr)}\nng_run's log:{self._log_tail()}"
            ) from None
        if check and result.returncode != 0:
            raise RuntimeError(f"ng_collect_rollouts exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ctrl-C, as a user would; returns ng_run's exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def __enter__(self) -> GymProcess:
        # `with gym.start(timeout=...):` must not start a second ng_run (it would find the first one's head
        # server ready, and the first would outlive the block).
        return self if self.process is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if exc_type is not None and self.log_path:  # the test failed or timed out inside the block: show why
            print(f"ng_run's log ({self.log_path}){self._log_tail()}", file=sys.stderr)


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""
