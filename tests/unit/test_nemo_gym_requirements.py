"""An environment's requirements.txt: the nemo-gym line is ours to replace, registry packages install, and a
requirement from outside the registry (git URL, download, local path) stops the environment with one error that
names it and the package."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ngym.nemo_gym_envs.requirements import RequirementsError, parse_requirements
from ngym.nemo_gym_envs.venvs import culprit, environment_python, failure_message
from ngym.vllm.process import free_port
from testkit.gym_process import console_script


def write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "my_env"
    folder.mkdir()
    (folder / "requirements.txt").write_text(text)
    return folder


def test_the_nemo_gym_line_is_set_aside_and_registry_lines_are_kept(tmp_path: Path) -> None:
    folder = write(tmp_path, "-e nemo-gym[dev] @ ../../\ntiktoken\nmath-verify==0.8.0  # pinned\n\n")
    parsed = parse_requirements(folder / "requirements.txt")
    assert parsed.nemo_gym_lines == ("-e nemo-gym[dev] @ ../../",)
    assert parsed.registry_lines == ["tiktoken", "math-verify==0.8.0"]
    assert parsed.outside_registry == ()


def test_without_requirements_txt_the_pyproject_dependencies_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "my_env"
    folder.mkdir()
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["nemo-gym[dev]", "json-repair==0.53.0", "human-eval-infilling"]\n'
        '[tool.uv.sources]\nnemo-gym = { path = "../..", editable = true }\n'
        'human-eval-infilling = { git = "https://github.com/example/human-eval-infilling.git" }\n'
    )
    parsed = parse_requirements(folder / "requirements.txt")
    assert parsed.path == folder / "pyproject.toml"
    assert parsed.nemo_gym_lines == ("nemo-gym @ ../..",)
    assert parsed.registry_lines == ["json-repair==0.53.0"]
    assert [r.line for r in parsed.outside_registry] == [
        "human-eval-infilling @ https://github.com/example/human-eval-infilling.git"
    ]


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("segale @ git+https://github.com/example/SEGALE.git@ab5e0d7", "segale"),
        ("git+https://github.com/example/verifiable-instructions.git", "git+https://github.com/example"),
        ("https://example.org/releases/download/en_core_web_sm-3.8.0-py3-none-any.whl", "en_core_web_sm"),
        ("-e ./pocketshell[pcre]", "pocketshell"),
    ],
)
def test_a_requirement_from_outside_the_registry_stops_the_environment_naming_it(
    tmp_path: Path, line: str, named: str
) -> None:
    folder = write(tmp_path, f"-e nemo-gym[dev] @ ../../\ntiktoken\n{line}\n")
    with pytest.raises(RequirementsError) as raised:
        environment_python(folder, "my_env")  # refused before anything is installed
    message = str(raised.value)
    assert message.startswith("environment my_env: requirement ")
    assert named in message and "not on the package registry" in message


def test_a_failed_install_names_the_environment_and_the_package(tmp_path: Path) -> None:
    folder = write(tmp_path, "tiktoken\nno-such-package-ngym==9.9\n")
    parsed = parse_requirements(folder / "requirements.txt")
    output = "  x No solution found when resolving dependencies:\n  `-> Because no-such-package-ngym was not found"
    assert culprit(parsed, output) == "no-such-package-ngym==9.9"
    message = failure_message("my_env", parsed, output)
    assert message.startswith("environment my_env: cannot install no-such-package-ngym==9.9 (from ")


GIT_ENV_CONFIG = """\
git_env:
  resources_servers:
    git_env:
      entrypoint: app.py
git_env_simple_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      resources_server: {type: resources_servers, name: git_env}
      model_server: {type: responses_api_models, name: policy_model}
"""


def test_ng_run_refuses_an_environment_with_a_git_requirement_before_anything_starts(tmp_path: Path) -> None:
    folder = tmp_path / "resources_servers" / "git_env"
    (folder / "configs").mkdir(parents=True)
    (folder / "app.py").write_text("from nemo_gym.base_resources_server import SimpleResourcesServer\n")
    git_line = "segale @ git+https://github.com/example/SEGALE.git@ab5e0d7"
    (folder / "requirements.txt").write_text(f"-e nemo-gym[dev] @ ../../\ntiktoken\n{git_line}\n")
    (folder / "configs" / "git_env.yaml").write_text(GIT_ENV_CONFIG)
    root = Path(__file__).resolve().parents[2]
    config_paths = f"{folder / 'configs' / 'git_env.yaml'},responses_api_models/vllm_model/configs/vllm_model.yaml"
    done = subprocess.run(
        [console_script("ng_run"), f"+config_paths=[{config_paths}]", "++policy_base_url=http://127.0.0.1:9/v1",
         "++policy_api_key=none", "++policy_model_name=m", f"+head_server.port={free_port()}"],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()  # one error, nothing installed or started before it
    assert line.startswith("ng_run: error: environment git_env: requirement segale (")
    assert git_line in line and "not on the package registry" in line
    assert done.stdout == ""
