"""Turn the three configuration sources into one resolved configuration.

Sources, lowest priority first: the YAML files named by `config_paths` (a file may name more), `env.yaml`
at the repository root, then the command line in Hydra's override grammar.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException

from ngym.config.errors import ConfigError

ENV_FILE_NAME = "env.yaml"
CONFIG_PATHS_KEY = "config_paths"


@dataclass
class Locations:
    """Where each dotted key was last set, for error messages ("file.yaml:12" or "command line '+x=1'")."""

    by_key: dict[str, str] = field(default_factory=dict)

    def of(self, dotted_key: str) -> str | None:
        key = dotted_key
        while key:
            if key in self.by_key:
                return self.by_key[key]
            key = key.rpartition(".")[0]
        return None

    def describe(self, dotted_key: str) -> str:
        where = self.of(dotted_key)
        return f" (set at {where})" if where else ""


@dataclass
class LoadedConfig:
    values: dict[str, Any]
    locations: Locations
    config_files: list[Path]
    root: Path


def parse_overrides(args: Iterable[str]) -> list[Override]:
    parser = OverridesParser.create()
    overrides: list[Override] = []
    for arg in args:
        try:
            overrides.extend(_parse_one(parser, arg))
        except HydraException as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(
                f"cannot parse command-line argument {arg!r}: {reason}. "
                'Expected Hydra override syntax such as +key=value, ++a.b=value or "+config_paths=[a.yaml, b.yaml]".'
            ) from None
    return overrides


def _parse_one(parser: OverridesParser, arg: str) -> list[Override]:
    try:
        return parser.parse_overrides([arg])
    except HydraException:
        if "\n" not in arg:
            raise
    # A list split over lines in a shell script ("a.yaml, \<newline>b.yaml" in single quotes) keeps its
    # newlines; Hydra's grammar does not allow them, a reader would not notice them.
    return parser.parse_overrides([arg.replace("\\\n", " ").replace("\n", " ")])


def load_config(args: Sequence[str], root: Path, *, use_env_file: bool = True) -> LoadedConfig:
    """Merge config files, env.yaml and command-line overrides, then resolve `${...}` interpolations."""
    root = root.resolve()
    overrides = parse_overrides(args)
    locations = Locations()

    env_path = root / ENV_FILE_NAME
    env_cfg = _load_yaml_file(env_path, locations) if use_env_file and env_path.is_file() else OmegaConf.create()

    paths = _config_paths_from(overrides, env_cfg, env_path)
    merged: DictConfig = OmegaConf.create()
    loaded_files: list[Path] = []
    for entry in paths:
        _merge_file_tree(
            merged, _resolve_path(root, entry, "command line or env.yaml"), root, locations, loaded_files, chain=()
        )

    env_cfg.pop(CONFIG_PATHS_KEY, None)
    merged = OmegaConf.merge(merged, env_cfg)  # type: ignore[assignment]
    for override in overrides:
        if override.key_or_group != CONFIG_PATHS_KEY:
            _apply_override(merged, override, locations)

    return LoadedConfig(values=resolve(merged, locations), locations=locations, config_files=loaded_files, root=root)


def resolve(cfg: DictConfig, locations: Locations) -> dict[str, Any]:
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except InterpolationKeyError as exc:
        used_at = exc.full_key or "?"
        missing = _missing_interpolation_name(exc)
        raise ConfigError(
            f"{used_at}{locations.describe(used_at)} uses ${{{missing}}}, but {missing!r} is not set. "
            f"Set it in {ENV_FILE_NAME} at the repository root (see env.yaml.example) or on the command line "
            f"as +{missing}=..."
        ) from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"cannot resolve {key}{locations.describe(key)}: {reason}") from None
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def _missing_interpolation_name(exc: InterpolationKeyError) -> str:
    first_line = str(exc).splitlines()[0]
    parts = first_line.split("'")
    return parts[1] if len(parts) >= 3 else first_line


def _config_paths_from(overrides: list[Override], env_cfg: DictConfig, env_path: Path) -> list[str]:
    raw: Any = None
    for override in overrides:
        if override.key_or_group == CONFIG_PATHS_KEY and not override.is_delete():
            raw = override.value()
    if raw is None and CONFIG_PATHS_KEY in env_cfg:
        raw = OmegaConf.to_container(env_cfg, resolve=False).get(CONFIG_PATHS_KEY)  # type: ignore[union-attr]
    return _as_path_list(raw, where=str(env_path) if raw is not None else "command line")


def _as_path_list(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, ListConfig):
        raw = OmegaConf.to_container(raw, resolve=False)
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise ConfigError(f"config_paths in {where} must be a list of file paths, got {raw!r}")
    return [p.strip() for p in raw if p.strip()]


def _resolve_path(root: Path, entry: str, listed_in: str) -> Path:
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {entry} (listed in config_paths of {listed_in}; paths are relative to the "
            f"repository root {root})"
        )
    return path


def _merge_file_tree(
    merged: DictConfig, path: Path, root: Path, locations: Locations, loaded: list[Path], chain: tuple[Path, ...]
) -> None:
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"config_paths form a cycle: {cycle}")
    cfg = _load_yaml_file(path, locations)
    nested = _as_path_list(cfg.pop(CONFIG_PATHS_KEY, None), where=str(path))
    for entry in nested:
        _merge_file_tree(merged, _resolve_path(root, entry, str(path)), root, locations, loaded, (*chain, path))
    merged.merge_with(cfg)
    loaded.append(path)


def _load_yaml_file(path: Path, locations: Locations) -> DictConfig:
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    if data is None:
        return OmegaConf.create()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a config file must be a mapping, got {type(data).__name__}")
    _record_locations(node, str(path), "", locations)
    try:
        return OmegaConf.create(data)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from None


def _record_locations(node: yaml.Node | None, file: str, prefix: str, locations: Locations) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        dotted = f"{prefix}{key_node.value}"
        locations.by_key[dotted] = f"{file}:{key_node.start_mark.line + 1}"
        _record_locations(value_node, file, dotted + ".", locations)


def _apply_override(cfg: DictConfig, override: Override, locations: Locations) -> None:
    key = override.key_or_group
    arg = override.input_line or key
    exists = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT
    if override.type == OverrideType.DEL:
        if not exists:
            raise ConfigError(f"command-line argument {arg!r} deletes {key}, which is not in the configuration")
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if isinstance(parent, DictConfig):
            parent.pop(leaf)
        return
    if override.type == OverrideType.ADD and exists:
        raise ConfigError(
            f"command-line argument {arg!r} adds {key}, but it is already set{locations.describe(key)}. "
            f"Use ++{key}=... to override it."
        )
    if override.type == OverrideType.CHANGE and not exists:
        raise ConfigError(
            f"command-line argument {arg!r} changes {key}, which is not in the configuration. Use +{key}=... to add it."
        )
    try:
        OmegaConf.update(cfg, key, override.value(), merge=True, force_add=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"command-line argument {arg!r}: {str(exc).splitlines()[0]}") from None
    locations.by_key[key] = f"command line {arg!r}"


_ABSENT = object()
