"""Each environment's requirements in a virtual environment of its own, installed once and cached by content.

The venv holds the environment's `requirements.txt` (the line that installs nemo-gym itself replaced by what our
`nemo_gym` package needs, and by what nemo-gym would have brought that the code imports: `implied`) and sees
ngym's source through a `.pth` file. Its folder is named by a hash of the Python, that list and ngym's
compatibility requirements, so an unchanged environment reuses it and a changed one gets a new one. uv installs
(seconds), pip when uv is missing; every line of the installer is shown with the environment's name, and a
failure is one error naming the environment and the package.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ngym.nemo_gym_envs.implied import implied_requirements
from ngym.nemo_gym_envs.package import cache_root
from ngym.nemo_gym_envs.requirements import Requirements, parse_requirements

# What ngym's `nemo_gym` package and the environment's process need (NeMo Gym's own pins where it pins).
COMPAT_REQUIREMENTS = (
    "fastapi>=0.110",
    "openai==2.44.0",
    "itsdangerous",
    "aiohttp>=3.9",
    "omegaconf>=2.3",
    "orjson>=3.9",
    "pydantic>=2.6",
    "pyyaml>=6",
    "uvicorn>=0.29",
    "uvloop>=0.19",
    "httptools>=0.6",
)
LAYOUT_VERSION = "1"  # bump when what goes into a venv changes in a way its hash does not see
_READY = ".ready"
NGYM_SOURCE = Path(__file__).resolve().parents[2]

Show = Callable[[str], None]


class InstallError(RuntimeError):
    """An environment's requirements could not be installed; the message names the environment and package."""


def venv_key(requirements: list[str]) -> str:
    digest = hashlib.sha256()
    for part in (LAYOUT_VERSION, os.path.realpath(sys.executable), sys.version, *COMPAT_REQUIREMENTS, "--",
                 *requirements):  # fmt: skip
        digest.update(part.encode() + b"\n")
    return digest.hexdigest()[:16]


def venvs_dir() -> Path:
    return cache_root() / "nemo_gym_envs" / "venvs"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def environment_python(folder: Path, name: str, show: Show | None = None, extra: tuple[str, ...] = ()) -> Path:
    """The Python of the environment's venv, installing it first when it is not cached; `extra` packages (e.g.
    pytest, for the environment's own tests) make a venv of their own."""
    say = show or (lambda text: print(text, flush=True))
    requirements = parse_requirements(folder / "requirements.txt")
    requirements.check_registry_only(name)
    lines = requirements.registry_lines + implied_requirements(folder, requirements) + list(extra)
    target = venvs_dir() / venv_key(lines)
    if (target / _READY).is_file():
        return venv_python(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_suffix(".lock")):
        if (target / _READY).is_file():  # another process installed it while this one waited
            return venv_python(target)
        say(f"{name}: installing its requirements into {target} ({len(lines)} packages + ngym's nemo_gym needs)")
        _install(target, requirements, lines, name, say)
        say(f"{name}: requirements installed")
    return venv_python(target)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install(target: Path, requirements: Requirements, lines: list[str], name: str, say: Show) -> None:
    scratch = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    uv = [sys.executable, "-m", "uv"] if importlib.util.find_spec("uv") is not None else None
    try:
        if uv is not None:
            _run([*uv, "venv", "--quiet", "--python", sys.executable, str(scratch)], name, say, requirements)
            install = [*uv, "pip", "install", "--python", str(venv_python(scratch))]
        else:
            _run([sys.executable, "-m", "venv", str(scratch)], name, say, requirements)
            install = [str(venv_python(scratch)), "-m", "pip", "install", "--disable-pip-version-check"]
        _run([*install, *COMPAT_REQUIREMENTS, *lines], name, say, requirements)
        site = _site_packages(scratch)
        (site / "_ngym_source.pth").write_text(str(NGYM_SOURCE) + "\n")
        (scratch / _READY).write_text("\n".join(lines) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python*/site-packages"))
    if not found:
        raise InstallError(f"{venv} has no site-packages folder")
    return found[0]


def _run(command: list[str], name: str, say: Show, requirements: Requirements) -> None:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert process.stdout is not None
    output: list[str] = []
    for line in process.stdout:
        text = line.rstrip()
        output.append(text)
        say(f"{name}: {text}")
    if process.wait() != 0:
        raise InstallError(failure_message(name, requirements, "\n".join(output)))


def failure_message(name: str, requirements: Requirements, output: str) -> str:
    """One error naming the environment and the package the installer could not install."""
    package = culprit(requirements, output)
    tail = "\n".join(f"    | {line}" for line in output.strip().splitlines()[-12:])
    return f"environment {name}: cannot install {package} (from {requirements.path}):\n{tail}"


def culprit(requirements: Requirements, output: str) -> str:
    """The requirement the installer's output blames, else every requirement of the environment."""
    lowered = output.lower()
    for requirement in requirements.installable:
        if requirement.name and re.search(rf"(?<![\w.-]){re.escape(requirement.name.lower())}(?![\w-])", lowered):
            return requirement.line
    return ", ".join(requirements.registry_lines) or "its requirements"
