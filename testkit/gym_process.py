"""The tests' ng_run: the product's launcher with what only tests need (ng_collect_rollouts against it, its log
when a test fails)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from ngym.api.process import NgRun

SEED_CONFIG_PATHS = (
    "responses_api_models/vllm_model/configs/vllm_model.yaml",
    "resources_servers/simple_weather/configs/simple_weather.yaml",
)


def console_script(name: str) -> str:
    """The path of one of ngym's commands in the running interpreter's environment."""
    return str(Path(sys.executable).parent / name)


class GymProcess(NgRun):
    """The product's launcher (ngym.api.process.NgRun) as the tests use it: `ng_run` with the given config files
    and overrides, run from `root`, its output in `log_path`; plus `collect` (ng_collect_rollouts against it) and
    its log shown when a `with` block fails."""

    def __init__(
        self,
        root: Path,
        config_paths: Sequence[str],
        overrides: Sequence[str] = (),
        *,
        head_port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        port = [f"++head_server.port={head_port}"] if head_port else []
        args = [f"+config_paths=[{', '.join(config_paths)}]", *overrides, *port]
        super().__init__(args, cwd=root, log_path=log_path)
        self.root = root

    def start(self, timeout: float = 180.0) -> GymProcess:
        super().start(timeout)
        return self

    def collect_command(self, *args: str) -> list[str]:
        """ng_collect_rollouts with `args`, against this ng_run."""
        return [console_script("ng_collect_rollouts"), *args, f"+head_server.port={self.head_port}"]

    def collector(self, *args: str) -> subprocess.Popen[str]:
        """ng_collect_rollouts with `args` against this ng_run, started and left running (its output piped)."""
        return subprocess.Popen(self.collect_command(*args), cwd=self.root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip

    def collect(self, *args: str, check: bool = True, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run ng_collect_rollouts against this ng_run; one that has not exited after `timeout` seconds is killed
        and its output shown."""
        command = self.collect_command(*args)
        try:
            result = subprocess.run(command, cwd=self.root, capture_output=True, text=True, check=False,
                                    timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired as hung:
            raise RuntimeError(
                f"ng_collect_rollouts had not exited after {timeout:g} s and was killed; its output:\n"
                f"{_text(hung.stdout)}\n{_text(hung.stderr)}\nng_run's log:{self.log_tail()}"
            ) from None
        if check and result.returncode != 0:
            raise RuntimeError(f"ng_collect_rollouts exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def stop(self, timeout: float = 30.0) -> int | None:
        return super().stop(timeout)

    def __enter__(self) -> GymProcess:
        return self if self.process is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if exc_type is not None and self.log_path:  # the test failed or timed out inside the block: show why
            print(f"ng_run's log ({self.log_path}){self.log_tail()}", file=sys.stderr)


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""
