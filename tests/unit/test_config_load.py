from pathlib import Path

import pytest

from ngym.config.errors import ConfigError
from ngym.config.load import load_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_config_paths_env_and_command_line_merge_in_priority_order(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "a: 1\nb: {c: 2, d: 3}\nurl: ${policy_base_url}\n")
    write(tmp_path / "more.yaml", "b: {c: 20}\n")
    write(tmp_path / "env.yaml", "policy_base_url: http://x/v1\na: 10\n")
    loaded = load_config(["+config_paths=[base.yaml, more.yaml]", "++b.d=30", "+e=[1, 2]"], tmp_path)
    assert loaded.values == {
        "a": 10,
        "b": {"c": 20, "d": 30},
        "url": "http://x/v1",
        "policy_base_url": "http://x/v1",
        "e": [1, 2],
    }


def test_seed_style_config_paths_with_spaces_and_newline(tmp_path: Path) -> None:
    write(tmp_path / "x/one.yaml", "one: 1\n")
    write(tmp_path / "y/two.yaml", "two: 2\n")
    loaded = load_config(["+config_paths=[x/one.yaml, \ny/two.yaml]"], tmp_path)
    assert loaded.values == {"one": 1, "two": 2}


def test_nested_config_paths_are_loaded_before_the_including_file(tmp_path: Path) -> None:
    write(tmp_path / "inner.yaml", "k: inner\nonly_inner: 1\n")
    write(tmp_path / "outer.yaml", "config_paths: [inner.yaml]\nk: outer\n")
    assert load_config(["+config_paths=[outer.yaml]"], tmp_path).values == {"k": "outer", "only_inner": 1}


def test_config_paths_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "config_paths: [b.yaml]\n")
    write(tmp_path / "b.yaml", "config_paths: [a.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(["+config_paths=[a.yaml]"], tmp_path)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: nope\.yaml"):
        load_config(["+config_paths=[nope.yaml]"], tmp_path)


def test_missing_file_listed_by_another_file_names_both(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "config_paths: [gone.yaml]\n")
    with pytest.raises(ConfigError, match=r"gone\.yaml.*a\.yaml"):
        load_config(["+config_paths=[a.yaml]"], tmp_path)


def test_unresolved_interpolation_names_the_key_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "m.yaml", "policy_model:\n  x:\n    base_url: ${policy_base_url}\n")
    with pytest.raises(ConfigError) as info:
        load_config(["+config_paths=[m.yaml]"], tmp_path)
    message = str(info.value)
    assert "policy_model.x.base_url" in message
    assert "m.yaml:3" in message
    assert "policy_base_url" in message and "env.yaml" in message


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", "a: 1\nb: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(["+config_paths=[bad.yaml]"], tmp_path)


def test_unparseable_override_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot parse command-line argument '\+a=\[1,2'"):
        load_config(["+a=[1,2"], tmp_path)


def test_add_of_existing_key_and_change_of_missing_key_follow_hydra(tmp_path: Path) -> None:
    write(tmp_path / "c.yaml", "a: 1\n")
    with pytest.raises(ConfigError, match=r"already set.*c\.yaml:1.*\+\+a="):
        load_config(["+config_paths=[c.yaml]", "+a=2"], tmp_path)
    with pytest.raises(ConfigError, match=r"not in the configuration.*\+b="):
        load_config(["+config_paths=[c.yaml]", "b=2"], tmp_path)
    assert load_config(["+config_paths=[c.yaml]", "a=2", "~a", "+z=1"], tmp_path).values == {"z": 1}


def test_env_file_is_optional_and_can_list_config_paths(tmp_path: Path) -> None:
    write(tmp_path / "c.yaml", "a: ${v}\n")
    write(tmp_path / "env.yaml", "config_paths: [c.yaml]\nv: 5\n")
    assert load_config([], tmp_path).values == {"a": 5, "v": 5}
    assert load_config(["+v=1"], tmp_path, use_env_file=False).values == {"v": 1}
