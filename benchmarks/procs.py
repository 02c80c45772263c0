"""What /proc says about a process: CPU seconds, peak memory, children; and starting the stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from ngym.vllm.process import free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces; fields start after ")"
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its live descendants (a server with num_workers > 1 forks)."""
    return sum(cpu_seconds(p) for p in [pid, *descendants(pid)] if Path(f"/proc/{p}").exists())


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmHWM for pid {pid}")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(p) for p in text)
    return found


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for child in children(pid):
        found.append(child)
        found.extend(descendants(child))
    return found


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


def instance_pids(ng_run_pid: int) -> dict[str, int]:
    """Each server instance's process (`ngym.servers.launch --instance NAME`) among ng_run's children."""
    pids: dict[str, int] = {}
    for child in children(ng_run_pid):
        args = cmdline(child)
        if "--instance" in args:
            pids[args[args.index("--instance") + 1]] = child
    return pids


def wait_http_ok(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


class StandinProcess:
    """`python -m testkit.standin` in its own process, on a free port."""

    def __init__(self, *, tool_call_mode: bool = False, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.args = [sys.executable, "-m", "testkit.standin", "--port", str(self.port)]
        if tool_call_mode:
            self.args.append("--tool-call-mode")
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> StandinProcess:
        output = self.log_path.open("wb") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(self.args, stdout=output, stderr=subprocess.STDOUT)
        if self.log_path:
            output.close()  # type: ignore[union-attr]
        wait_http_ok(f"http://127.0.0.1:{self.port}/health", 30, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> StandinProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
