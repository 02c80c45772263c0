"""One vLLM OpenAI-compatible server as a child process: started, watched, and never left behind.

vLLM runs under a small watchdog that leads its own process group and kills the group when its owner dies in
any way (SIGKILL included), so local_vllm_model, the demo and the tests all leave nothing running. Stdlib
only: this runs in ngym's venv, which has no torch and no vLLM (vLLM runs from its own Python).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ngym.vllm.progress import StartupProgress
from ngym.vllm.watchdog import STOP_GRACE_SECONDS, stop_group

VLLM_PYTHON_ENV = "NGYM_VLLM_PYTHON"
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
DEFAULT_ARGS: tuple[str, ...] = ("--dtype", "bfloat16", "--enforce-eager")
DEFAULT_ENV: Mapping[str, str] = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default would reserve far more than a test machine has
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
LOG_TAIL_CHARS = 6000


class VllmStartError(RuntimeError):
    """vLLM exited or did not become ready; the message carries the tail of its log."""


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    url: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> HttpResult:
    """One HTTP request; HTTP error statuses are returned, not raised (connection errors still raise)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return HttpResult(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def find_vllm_python(repo_root: Path) -> Path | None:
    """The vLLM venv's interpreter: ``$NGYM_VLLM_PYTHON`` if set, else ``<repo_root>/.venv-vllm/bin/python``."""
    override = os.environ.get(VLLM_PYTHON_ENV)
    candidate = Path(override) if override else Path(repo_root) / ".venv-vllm" / "bin" / "python"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _LiveServers:
    """Servers still running, so that interpreter exit (e.g. a crashed test run) leaves no vLLM behind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[int, VllmServer] = {}

    def add(self, server: VllmServer) -> None:
        with self._lock:
            self._servers[id(server)] = server

    def discard(self, server: VllmServer) -> None:
        with self._lock:
            self._servers.pop(id(server), None)

    def stop_all(self) -> None:
        with self._lock:
            servers = list(self._servers.values())
        for server in servers:
            server.stop()


_LIVE = _LiveServers()
atexit.register(_LIVE.stop_all)


class VllmServer:
    """A vLLM api_server subprocess in its own process group.

    ``with VllmServer(model_dir) as server: server.base_url`` starts it and waits until it serves;
    leaving the block (or interpreter exit) kills the whole process group.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        python: Path | str = Path(".venv-vllm/bin/python"),
        port: int | None = None,
        host: str = "127.0.0.1",
        served_model_name: str | None = None,
        api_key: str | None = None,
        tool_call_parser: str | None = "hermes",
        reasoning_parser: str | None = None,
        max_model_len: int = 1024,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: Path | str | None = None,
        serve_args: Sequence[str] | None = None,
    ) -> None:
        """`serve_args`, when given, are vLLM's arguments after `--model --host --port` and replace every
        test-friendly default here (parser, dtype, max_model_len): what local_vllm_model uses."""
        self.serve_args = None if serve_args is None else tuple(serve_args)
        self.model_dir = Path(model_dir)
        self.python = Path(python)
        self.host = host
        self._fixed_port = port
        self.port = port if port is not None else 0
        self.served_model_name = served_model_name
        self.api_key = api_key
        self.tool_call_parser = tool_call_parser
        self.reasoning_parser = reasoning_parser
        self.max_model_len = max_model_len
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.log_path = Path(log_path) if log_path is not None else None
        self._owns_log = False  # a temp log we made: removed on a clean stop, kept when start-up failed
        self.ready_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- addresses -------------------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def model_name(self) -> str:
        # vLLM serves the model under the --model argument verbatim unless --served-model-name is given.
        return self.served_model_name or str(self.model_dir)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def command(self) -> list[str]:
        cmd = [str(self.python), "-m", API_SERVER_MODULE, "--model", str(self.model_dir)]
        cmd += ["--host", self.host, "--port", str(self.port)]
        if self.serve_args is not None:
            return cmd + list(self.serve_args)  # the api key goes in the environment, out of `ps`
        cmd += ["--max-model-len", str(self.max_model_len)]
        cmd += DEFAULT_ARGS
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        if self.tool_call_parser:
            cmd += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_call_parser]
        if self.reasoning_parser:
            cmd += ["--reasoning-parser", self.reasoning_parser]
        return cmd + list(self.extra_args)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0, on_progress: Callable[[str], None] | None = None) -> VllmServer:
        """Launch and wait until vLLM serves; `on_progress` hears each start-up phase (see progress.py)."""
        if self._proc is not None:
            raise RuntimeError("this VllmServer was already started")
        if not self.python.is_file():
            raise VllmStartError(f"vLLM python not found: {self.python}")
        attempts = 1 if self._fixed_port is not None else 3
        for attempt in range(attempts):
            try:
                self._launch()
                self._wait_ready(timeout, on_progress)
                return self
            except VllmStartError as err:
                self.stop()
                # A free port picked by us can be taken before vLLM binds it; pick another once.
                if attempt + 1 < attempts and "address already in use" in str(err).lower():
                    continue
                raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        if self._fixed_port is None:
            self.port = free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="vllm-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
            self._owns_log = True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        defaults = DEFAULT_ENV if self.serve_args is None else {}  # explicit serve_args: the caller's env only
        # Unbuffered: a vLLM that is killed still leaves every line it wrote in its log.
        env = {**os.environ, **defaults, "PYTHONUNBUFFERED": "1", **self.env}
        if self.serve_args is not None and self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        # vLLM runs under a stdlib watchdog that leads a new process group (so stop() can kill the engine-core
        # children too) and kills that group when our end of its stdin pipe closes, i.e. when this process
        # dies in any way, SIGKILL included, where atexit would not run.
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ngym.vllm.watchdog", *self.command()],
            stdin=subprocess.PIPE,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        _LIVE.add(self)

    def _wait_ready(self, timeout: float, on_progress: Callable[[str], None] | None = None) -> None:
        started = time.monotonic()
        deadline = started + timeout
        assert self.log_path is not None
        progress = StartupProgress(self.log_path)
        while time.monotonic() < deadline:
            assert self._proc is not None
            if on_progress is not None:
                for phase in progress.poll():
                    on_progress(f"{phase} ({time.monotonic() - started:.0f} s)")
            if self._proc.poll() is not None:
                raise VllmStartError(
                    f"vLLM exited with code {self._proc.returncode} before it was ready; "
                    f"command: {self.display_command()}\n--- log tail ({self.log_path}) ---\n{self.log_tail()}"
                )
            if self._is_ready():
                self.ready_seconds = time.monotonic() - started
                return
            time.sleep(0.5)
        raise VllmStartError(
            f"vLLM not ready after {timeout:.0f}s at {self.root_url}\n"
            f"--- log tail ({self.log_path}) ---\n{self.log_tail()}"
        )

    def _is_ready(self) -> bool:
        try:
            if http_request(f"{self.root_url}/health", timeout=5).status != 200:
                return False
            return http_request(f"{self.base_url}/models", headers=self.auth_headers(), timeout=5).status == 200
        except OSError:
            return False

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc.pid, grace, lambda: proc.poll() is None)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.stdin is not None:
                proc.stdin.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
            if self._owns_log and self.ready_seconds is not None and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)
        _LIVE.discard(self)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        with open(self.log_path, "rb") as f:
            f.seek(max(0, self.log_path.stat().st_size - chars))
            return self._redact(f.read().decode(errors="replace"))

    def display_command(self) -> str:
        return self._redact(" ".join(self.command()))

    def _redact(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text

    # -- convenience -----------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 120.0) -> HttpResult:
        """``path`` is relative to the server root, e.g. ``/v1/chat/completions`` or ``/tokenize``."""
        return http_request(
            f"{self.root_url}{path}", method=method, body=body, headers=self.auth_headers(), timeout=timeout
        )

    def served_models(self) -> list[str]:
        return [m["id"] for m in self.request("GET", "/v1/models").json()["data"]]

    def __enter__(self) -> VllmServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
