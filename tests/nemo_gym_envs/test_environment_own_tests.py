"""NeMo Gym's own tests of an environment (`resources_servers/<name>/tests/test_app.py`, from nemo-gym 0.7.0's
files fetched at test time) pass against ngym's `nemo_gym`, run with pytest inside the environment's venv. They
build servers from configs, post to FastAPI's TestClient, mock `ServerClient`, and call the metric hooks.
`pytest -m nemo_gym_envs` selects them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ngym.nemo_gym_envs.env_tests import run_environment_tests

pytestmark = pytest.mark.nemo_gym_envs


@pytest.mark.parametrize("name", ["mcqa", "workplace_assistant"])
def test_the_environments_own_test_app_passes(tree: Path, name: str) -> None:
    done = run_environment_tests(tree, name, ["tests/test_app.py", "-q"])
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert " passed" in output and " failed" not in output
