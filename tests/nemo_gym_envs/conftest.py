"""NeMo Gym's files (nemo-gym 0.7.0), fetched from the package registry once into the git-ignored cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from ngym.nemo_gym_envs.package import FetchError, ensure_package


@pytest.fixture(scope="session")
def tree() -> Path:
    try:
        return ensure_package()
    except FetchError as exc:
        pytest.skip(f"the package registry is unreachable, so NeMo Gym's environments cannot be fetched: {exc}")
