"""ng_test: run one server's tests.

Usage: ng_test +entrypoint=responses_api_models/vllm_model [+pytest_args="-x -k name"]
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from ngym.cli.common import repo_root, run_cli
from ngym.config.errors import ConfigError
from ngym.config.instances import SERVER_TYPES
from ngym.config.load import load_config


def run(args: list[str]) -> int:
    """ng_test +entrypoint=<server type>/<implementation>: run that server's tests with pytest."""
    values = load_config(args, repo_root(), use_env_file=False).values
    entrypoint = str(values.get("entrypoint") or "").strip("/")
    unknown = sorted(set(values) - {"entrypoint", "pytest_args"})
    if unknown:
        raise ConfigError(f"unknown arguments: {', '.join(unknown)} (ng_test takes +entrypoint and +pytest_args)")
    if not entrypoint:
        raise ConfigError(
            "missing +entrypoint=<server type>/<implementation>, e.g. +entrypoint=responses_api_models/vllm_model"
        )
    server_dir = repo_root() / entrypoint
    if entrypoint.split("/")[0] not in SERVER_TYPES or not server_dir.is_dir():
        raise ConfigError(f"+entrypoint={entrypoint}: no server folder {server_dir} (expected <server type>/<name>)")
    tests = server_dir / "tests"
    if not tests.is_dir():
        raise ConfigError(f"{entrypoint} has no tests folder ({tests})")
    extra = shlex.split(str(values.get("pytest_args") or ""))
    return subprocess.call([sys.executable, "-m", "pytest", str(tests), *extra], cwd=repo_root())


def main(argv: list[str] | None = None) -> int:
    return run_cli("ng_test", run, argv)


if __name__ == "__main__":
    sys.exit(main())
