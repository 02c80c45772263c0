"""An environment's own tests (`resources_servers/<name>/tests/`), run with pytest inside its venv against ngym's
`nemo_gym`: `python -m ngym.nemo_gym_envs.env_tests TREE NAME [pytest args]` installs pytest beside the
environment's requirements (a venv of its own, cached like the others) and runs them there.

Inside that process (`--inside`), the import paths are the environment process's (ngym.nemo_gym_envs.serve): the
environment's folder first, our `nemo_gym`, then its tree, with the tree's `resources_servers` bound to the name.
Async tests run as NeMo Gym runs them (pytest-asyncio, `asyncio_mode=auto`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ngym.nemo_gym_envs.serve import enter_environment
from ngym.nemo_gym_envs.venvs import Show, environment_python

TEST_TOOLS = ("pytest>=8", "pytest-asyncio>=0.23")
PYTEST_OPTIONS = (
    "-p",
    "no:cacheprovider",
    "-o",
    "asyncio_mode=auto",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
)


def run_environment_tests(
    tree: Path, name: str, pytest_args: list[str] | None = None, show: Show | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `resources_servers/<name>/tests` of `tree` in the environment's venv (plus pytest); its output is
    captured in the result."""
    folder = (tree / "resources_servers" / name).resolve()
    python = environment_python(folder, name, show or (lambda _text: None), extra=TEST_TOOLS)
    command = [str(python), "-m", "ngym.nemo_gym_envs.env_tests", "--inside", str(tree.resolve()), name,
               *(pytest_args or ["tests", "-q"])]  # fmt: skip
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)


def _inside(tree: Path, name: str, pytest_args: list[str]) -> int:
    import pytest

    folder = tree / "resources_servers" / name
    enter_environment(tree, folder)
    os.chdir(folder)
    # Neither ngym's pytest settings nor its conftest.py (the cache lies inside ngym's checkout) apply.
    isolated = ["-c", os.devnull, "--rootdir", str(folder), "--confcutdir", str(folder)]
    return int(pytest.main([*PYTEST_OPTIONS, *isolated, *pytest_args]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("tree", type=Path)
    parser.add_argument("name")
    args, pytest_args = parser.parse_known_args(argv)
    if args.inside:
        return _inside(args.tree.resolve(), args.name, pytest_args)
    done = run_environment_tests(args.tree, args.name, pytest_args or None, show=lambda text: print(text))
    print(done.stdout + done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
