"""Which instances ng_run runs as NeMo Gym servers (ngym.nemo_gym_envs.detect): an environment or an agent whose
code is in its config file's tree, never one of ngym's own; and `ngym.config.instances` asks through the
predicate ng_run hands it, importing nothing of ngym.nemo_gym_envs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ngym.config.errors import ConfigError
from ngym.config.instances import find_instances
from ngym.config.load import Locations
from ngym.nemo_gym_envs.detect import AGENTS, RESOURCES_SERVERS, is_nemo_gym_server, nemo_gym_server

ROOT = Path(__file__).resolve().parents[2]


def nemo_gym_tree(tmp_path: Path) -> tuple[dict[str, Any], Locations]:
    """A NeMo Gym tree with an environment and an agent of its own, and a config file pairing them."""
    tree = tmp_path / "Gym"
    for folder in ("resources_servers/my_env", "responses_api_agents/my_agent"):
        (tree / folder).mkdir(parents=True)
        (tree / folder / "app.py").write_text("from nemo_gym.server_utils import SimpleServer\n")
    config_file = tree / "resources_servers/my_env/configs/my_env.yaml"
    config_file.parent.mkdir()
    config_file.write_text("# written below\n")
    config = {
        "my_env": {RESOURCES_SERVERS: {"my_env": {"entrypoint": "app.py"}}},
        "my_env_agent": {AGENTS: {"my_agent": {"entrypoint": "app.py"}}},
        "ngym_agent": {AGENTS: {"simple_agent": {"entrypoint": "app.py"}}},
    }
    where = f"{config_file}:1"
    locations = Locations({"my_env": where, "my_env_agent": where, "ngym_agent": where})
    return config, locations


def test_environments_and_agents_in_the_config_files_tree_are_nemo_gyms(tmp_path: Path) -> None:
    config, locations = nemo_gym_tree(tmp_path)
    instances = find_instances(config, ROOT, locations, is_nemo_gym_server)
    assert set(instances) == {"my_env", "my_env_agent", "ngym_agent"}
    agent = nemo_gym_server(instances["my_env_agent"], ROOT, locations)
    assert agent is not None and agent.is_agent and agent.name == "my_agent"
    assert agent.folder == (tmp_path / "Gym/responses_api_agents/my_agent").resolve()
    assert agent.tree == (tmp_path / "Gym").resolve()
    environment = nemo_gym_server(instances["my_env"], ROOT, locations)
    assert environment is not None and not environment.is_agent
    assert nemo_gym_server(instances["ngym_agent"], ROOT, locations) is None  # simple_agent stays ngym's


def test_without_the_predicate_code_outside_the_root_is_an_error(tmp_path: Path) -> None:
    config, locations = nemo_gym_tree(tmp_path)
    with pytest.raises(ConfigError, match=r"my_env_agent\.responses_api_agents\.my_agent\.entrypoint.*does not exist"):
        find_instances(config, ROOT, locations)


def test_an_agent_that_does_not_import_nemo_gym_is_not_run_as_one(tmp_path: Path) -> None:
    config, locations = nemo_gym_tree(tmp_path)
    (tmp_path / "Gym/responses_api_agents/my_agent/app.py").write_text("print('something else')\n")
    with pytest.raises(ConfigError, match=r"my_agent\.entrypoint"):
        find_instances(config, ROOT, locations, is_nemo_gym_server)


def test_the_configuration_imports_nothing_of_nemo_gym_envs() -> None:
    code = "import sys, ngym.config.instances\nprint(sorted(m for m in sys.modules if 'nemo_gym_envs' in m))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert found.stdout.strip() == "[]"
