"""Turn the three configuration sources into one resolved configuration.

Sources, lowest priority first: the YAML files named by `config_paths` (a file may name more), `env.yaml`
at the repository root, then the command line in Hydra's override grammar.
"""

from __future__ import annotations

import functools
import re
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
from ngym.config.secrets import is_secret_key, redact_override, redact_text, secret_values

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
    parser = _parser()
    overrides: list[Override] = []
    for arg in args:
        try:
            overrides.extend(_parse_one(parser, arg))
        except HydraException as exc:
            shown = redact_override(arg)
            # Hydra's reason quotes the text it stumbled on: said only when nothing in the argument is secret.
            reason = str(exc).splitlines()[0] if shown == arg else "not valid override syntax"
            raise ConfigError(
                f"cannot parse command-line argument {shown!r}: {reason}. "
                'Expected Hydra override syntax such as +key=value, ++a.b=value or "+config_paths=[a.yaml, b.yaml]"; '
                "quote a value that holds = , { } [ ] or spaces: ++key='a=b'."
            ) from None
    return overrides


@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


_DATA = (str, int, float, bool, type(None), list, dict)
# `+key=value`, `++key=value` or `key=value` with a plain dotted key: what a secret's override looks like.
_SETTING = re.compile(r"(?P<prefix>\+{0,2})(?P<key>[A-Za-z_][\w-]*(?:\.[\w-]+)*)=(?P<value>.*)\Z", re.DOTALL)


def _parse_one(parser: OverridesParser, arg: str) -> list[Override]:
    literal = _secret_literal(parser, arg)
    if literal is not None:
        return literal
    try:
        return parser.parse_overrides([arg])
    except HydraException:
        if "\n" not in arg:
            raise
    # A list split over lines in a shell script ("a.yaml, \<newline>b.yaml" in single quotes) keeps its
    # newlines; Hydra's grammar does not allow them, a reader would not notice them.
    return parser.parse_overrides([arg.replace("\\\n", " ").replace("\n", " ")])


def _secret_literal(parser: OverridesParser, arg: str) -> list[Override] | None:
    """A secret is an opaque string: `++policy_api_key=sk-proj-QWxh==` or `hf_abc{x}` is taken as it is typed when
    Hydra's grammar cannot read it as a plain value (an `=`, a brace, a comma, a quote that is not a quoted string).
    None for any other argument, which Hydra parses."""
    match = _SETTING.match(arg)
    if match is None or not is_secret_key(match["key"]):
        return None
    try:
        (parsed,) = parser.parse_overrides([arg])
        if isinstance(parsed.value(), _DATA):  # not a sweep (`a,b`) or glob
            return [parsed]
    except HydraException:
        pass
    return parser.parse_overrides([f"{match['prefix']}{match['key']}={quote_value(match['value'])}"])


def quote_value(value: str) -> str:
    """Hydra override text for the string `value` that reaches the resolved configuration as exactly `value`:
    single-quoted, quotes and the backslashes before them escaped (Hydra's rules), and `${` escaped so that
    OmegaConf does not read it as an interpolation."""

    def no_interpolation(match: re.Match[str]) -> str:
        return "\\" * (2 * len(match["slashes"]) + 1) + "${"

    text = re.sub(r"(?P<slashes>\\*)\$\{", no_interpolation, value)

    def before_quote(match: re.Match[str]) -> str:
        return "\\" * (2 * len(match["slashes"])) + ("\\'" if match["quote"] else "")

    return "'" + re.sub(r"(?P<slashes>\\*)(?:(?P<quote>')|\Z)", before_quote, text) + "'"


def value_text(value: str, *, typed: bool = False) -> str:
    """`value` as an override's value. A string Hydra reads back as itself stays as it is (`Qwen/Qwen3-8B`,
    `http://h:8000/v1`); any other is quoted (quote_value), so every string reaches the configuration unchanged.
    With `typed` (a flag that takes a number or a mapping), text Hydra reads as such data (`3`, `0.5`, `true`,
    `{a: 4}`) stays that data."""
    try:
        (parsed,) = _parser().parse_overrides([f"k={value}"])
        read = parsed.value()
    except HydraException:
        read = None
    else:
        if isinstance(read, str) and read == value and "${" not in value:
            return value
        if typed and isinstance(read, _DATA) and not isinstance(read, str) and "${" not in value:
            return value
    return quote_value(value)


def load_config(args: Sequence[str], root: Path, *, use_env_file: bool = True) -> LoadedConfig:
    """Merge config files, env.yaml and command-line overrides, then resolve `${...}` interpolations.

    No error shows a secret: an override of a secret key is shown as `++key=***`, and every secret value known
    when the error is raised (from the overrides, env.yaml and the files) is cut out of its message."""
    known: set[str] = set()
    try:
        return _load_config(args, root.resolve(), use_env_file, known)
    except ConfigError as exc:
        message = redact_text(str(exc), frozenset(known))
        if message == str(exc):
            raise
        raise ConfigError(message) from None


def _load_config(args: Sequence[str], root: Path, use_env_file: bool, known: set[str]) -> LoadedConfig:
    overrides = parse_overrides(args)
    for override in overrides:
        if not override.is_delete() and isinstance(override.value(), _DATA):
            known.update(_secrets_in({override.key_or_group: override.value()}))
    locations = Locations()

    env_path = root / ENV_FILE_NAME
    env_cfg = _load_yaml_file(env_path, locations) if use_env_file and env_path.is_file() else OmegaConf.create()
    known.update(_secrets_in(OmegaConf.to_container(env_cfg, resolve=False)))

    paths = _config_paths_from(overrides, env_cfg, env_path)
    merged: DictConfig = OmegaConf.create()
    loaded_files: list[Path] = []
    for entry in paths:
        _merge_file_tree(
            merged, _resolve_path(root, entry, "command line or env.yaml"), root, locations, loaded_files, chain=()
        )

    env_cfg.pop(CONFIG_PATHS_KEY, None)
    merged = OmegaConf.merge(merged, env_cfg)  # type: ignore[assignment]
    known.update(_secrets_in(OmegaConf.to_container(merged, resolve=False)))
    for override in overrides:
        if override.key_or_group != CONFIG_PATHS_KEY:
            _apply_override(merged, override, locations)

    return LoadedConfig(values=resolve(merged, locations), locations=locations, config_files=loaded_files, root=root)


def _secrets_in(value: Any) -> set[str]:
    """The secret values in value, less the `${...}` that stand for one (naming the key is not showing it)."""
    return {secret for secret in secret_values(value) if "${" not in secret}


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
    arg = redact_override(override.input_line or key)
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
        reason = "not a value this key can take" if is_secret_key(key) else str(exc).splitlines()[0]
        raise ConfigError(f"command-line argument {arg!r}: {reason}") from None
    locations.by_key[key] = f"command line {arg!r}"


_ABSENT = object()
