"""NeMo Gym's `gym` flags (`--resources-server`, `--model-type`, `--model-url`, ...) as Hydra overrides.

`gym env start --resources-server simple_weather --model-type vllm_model --model-url URL --model M
--model-api-key K` is `ng_run "+config_paths=[resources_servers/simple_weather/configs/simple_weather.yaml,
responses_api_models/vllm_model/configs/vllm_model.yaml]" ++policy_base_url=URL ++policy_model_name=M
++policy_api_key=K`. Flags and Hydra overrides mix freely; a flag ngym has no use for is an error naming it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ngym.config.errors import ConfigError
from ngym.config.load import parse_overrides, quote_value, value_text

CONFIG_PATHS_PREFIX = "+config_paths=["

# `--<selector> NAME[/FLAVOR]` -> `<folder>/NAME/configs/FLAVOR.yaml` (FLAVOR defaults to NAME).
SELECTORS = {"resources-server": "resources_servers", "model-type": "responses_api_models"}
# NeMo Gym selectors of catalogs ngym does not ship.
CATALOGS = {"benchmark": "benchmarks", "environment": "environments"}


@dataclass(frozen=True)
class ValueFlag:
    """`--name VALUE` -> `++key=VALUE` (`++` so a flag wins over env.yaml, as a command line should). The value is
    data, never override syntax: any string (`=`, braces, commas, quotes, newlines, `${`) reaches the
    configuration unchanged, quoted when it must be."""

    name: str
    key: str
    help: str
    aliases: tuple[str, ...] = ()
    typed: bool = False  # a number (or NeMo Gym's per-agent mapping): text Hydra reads as such stays that

    def override(self, value: str) -> str:
        return f"++{self.key}={value_text(value, typed=self.typed)}"


@dataclass(frozen=True)
class BoolFlag:
    name: str
    key: str
    help: str


MODEL_FLAGS = (
    ValueFlag("model", "policy_model_name", "served model name (policy_model_name)", aliases=("-m",)),
    ValueFlag("model-url", "policy_base_url", "vLLM base URL ending in /v1 (policy_base_url)"),
    ValueFlag("model-api-key", "policy_api_key", "vLLM api key (policy_api_key)"),
)
COLLECT_FLAGS = (
    ValueFlag("agent", "agent_name", "agent instance to collect with", aliases=("-a",)),
    ValueFlag("input", "input_jsonl_fpath", "input tasks JSONL", aliases=("-i",)),
    ValueFlag("output", "output_jsonl_fpath", "output rollouts JSONL", aliases=("-o",)),
    ValueFlag("limit", "limit", "the first N rows of the input", typed=True),
    ValueFlag("num-repeats", "num_repeats", "rollouts per task", typed=True),
    ValueFlag("prompt-config", "prompt_config", "prompt template YAML applied to the rows"),
    ValueFlag("concurrency", "num_samples_in_parallel", "rollouts in flight at once", typed=True),
    ValueFlag("split", "split", "which dataset of the agent to use when --input is not given"),
    ValueFlag("temperature", "responses_create_params.temperature", "sampling temperature", typed=True),
    ValueFlag("top-p", "responses_create_params.top_p", "nucleus sampling top-p", typed=True),
    ValueFlag(
        "max-output-tokens", "responses_create_params.max_output_tokens", "output tokens per model call", typed=True
    ),
)
COLLECT_BOOLS = (
    BoolFlag("resume", "resume_from_cache", "resume from the rollouts already in the output"),
    BoolFlag("disable-aggregation", "disable_aggregation", "skip the environments' aggregate metrics file"),
)


@dataclass(frozen=True)
class Parsed:
    overrides: list[str]
    no_serve: bool = False


def parser_for(
    command: str, *, configs: bool, model: bool, collect: bool, json_output: bool
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"gym {command}", allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="accepted; ngym's servers log nothing per request")
    if json_output:
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    if configs:
        parser.add_argument("--config", action="append", metavar="PATH", help="config file to load; repeatable")
        parser.add_argument("--search-dir", action="append", metavar="DIR", help="extra folder to find configs in")
        for selector in (*SELECTORS, *CATALOGS):
            parser.add_argument(f"--{selector}", metavar="NAME", help=f"load the named {selector} config")
    for flag in (*(MODEL_FLAGS if model else ()), *(COLLECT_FLAGS if collect else ())):
        parser.add_argument(f"--{flag.name}", *flag.aliases, dest=flag.key, help=flag.help)
    if collect:
        for switch in COLLECT_BOOLS:
            parser.add_argument(f"--{switch.name}", dest=switch.key, action="store_true", help=switch.help)
        parser.add_argument("--no-serve", action="store_true", help="collect from the running ng_run")
    return parser


def translate(parser: argparse.ArgumentParser, argv: Sequence[str], root: Path) -> Parsed:
    """Flags -> Hydra overrides; the Hydra overrides already in argv are kept (one `+config_paths`)."""
    flags, rest = parser.parse_known_args(list(argv))
    unknown = [arg for arg in rest if arg.startswith("-")]
    if unknown:
        known = ", ".join(sorted(opt for action in parser._actions for opt in action.option_strings))
        raise ConfigError(f"{parser.prog}: unknown flag {unknown[0]} (flags: {known}; or Hydra's +key=value)")
    values = vars(flags)
    for catalog, folder in CATALOGS.items():
        if values.get(catalog):
            raise ConfigError(
                f"{parser.prog}: --{catalog} selects NeMo Gym's {folder}/ catalog, which ngym does not ship; "
                "load the configs you need with --config PATH or --resources-server NAME"
            )
    paths = list(values.get("config") or [])
    search = [Path(d) for d in values.get("search_dir") or []] + [Path.cwd(), root]
    for selector, folder in SELECTORS.items():
        chosen = values.get(selector.replace("-", "_"))
        if chosen:
            paths.append(selected_config(selector, folder, chosen, search))
    value_flags = (*MODEL_FLAGS, *COLLECT_FLAGS)
    overrides = [flag.override(values[flag.key]) for flag in value_flags if values.get(flag.key) is not None]
    overrides += [f"++{switch.key}=true" for switch in COLLECT_BOOLS if values.get(switch.key)]
    if values.get("json"):
        overrides.append("++json=true")
    return Parsed(merge_config_paths(paths, [*rest, *overrides]), bool(values.get("no_serve")))


def selected_config(selector: str, folder: str, value: str, search: list[Path]) -> str:
    """`--resources-server NAME[/FLAVOR]` -> the config file, from the first search folder that has it."""
    name, _, flavor = value.partition("/")
    relative = Path(folder, name, "configs", f"{flavor or name}.yaml")
    for base in search:
        if (base / relative).is_file():
            return str(base / relative) if base != Path.cwd() else str(relative)
    choices = sorted(
        {f"{p.parent.parent.name}/{p.stem}" if p.stem != p.parent.parent.name else p.stem
         for base in search for p in (base / folder).glob("*/configs/*.yaml")}
    )  # fmt: skip
    raise ConfigError(
        f"--{selector} {value}: no config {relative} (searched {', '.join(str(b) for b in search)}); "
        f"available: {', '.join(choices) or 'none'}"
    )


def merge_config_paths(paths: list[str], overrides: list[str]) -> list[str]:
    """One `+config_paths=[...]` (Hydra refuses a key twice): the flags' files after any given as an override.
    A path is data too: one with a comma, a bracket or a quote in it is quoted."""
    given: list[str] = []
    rest: list[str] = []
    for token in overrides:
        listed = _listed_paths(token) if token.startswith(CONFIG_PATHS_PREFIX) and token.endswith("]") else None
        if listed is None:
            rest.append(token)
        else:
            given += listed
    merged = given + paths
    return ([config_paths_override(merged)] if merged else []) + rest


def _listed_paths(token: str) -> list[str] | None:
    try:
        (override,) = parse_overrides([token])
    except ConfigError:
        return None  # shown as the parse error it is when the configuration is loaded
    value = override.value()
    if not isinstance(value, list) or not all(isinstance(path, str) for path in value):
        return None
    return [path.strip() for path in value if path.strip()]


def config_paths_override(paths: list[str]) -> str:
    plain = f"{CONFIG_PATHS_PREFIX}{', '.join(paths)}]"
    try:
        (override,) = parse_overrides([plain])
        if override.value() == paths:
            return plain
    except ConfigError:
        pass
    return f"{CONFIG_PATHS_PREFIX}{', '.join(quote_value(path) for path in paths)}]"
