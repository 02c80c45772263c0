"""NeMo Gym's published files (its environments, configs and data), fetched once into a git-ignored cache.

`python -m ngym.nemo_gym_envs.package [--version V]` prints the folder. The wheel is fetched with pip (no
dependencies: it declares Requires-Python >= 3.13, so the download names that version) and unpacked; nothing of
it is imported into ngym's own process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_VERSION = "0.7.0"
PACKAGE_PYTHON = "3.13.14"  # the package's Requires-Python; pip refuses to download it for an older target
CACHE_ENV = "NGYM_CACHE_DIR"
_DONE = ".unpacked"


class FetchError(RuntimeError):
    """The package could not be fetched (no registry, or no such version); the message says which."""


def cache_root() -> Path:
    """`$NGYM_CACHE_DIR`, else `.cache/` at the repository root (git-ignored)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / ".cache"


def package_dir(version: str = DEFAULT_VERSION) -> Path:
    return cache_root() / "nemo_gym" / version


def ensure_package(version: str = DEFAULT_VERSION) -> Path:
    """The unpacked tree of nemo-gym `version` (its `resources_servers/`, `responses_api_agents/`, ...),
    downloading it the first time."""
    target = package_dir(version)
    if (target / _DONE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{version}-") as scratch:
        wheel = _download(version, Path(scratch))
        unpacked = Path(scratch) / "tree"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
        (unpacked / _DONE).write_text(wheel.name + "\n")
        if target.exists():  # a half-unpacked earlier try
            shutil.rmtree(target)
        os.replace(unpacked, target)
    return target


def _download(version: str, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--python-version", PACKAGE_PYTHON, f"nemo-gym=={version}", "-d", str(into),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(into.glob("nemo_gym-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise FetchError(f"cannot download nemo-gym=={version} from the package registry:\n{tail}")
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    try:
        print(ensure_package(args.version))
    except FetchError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
