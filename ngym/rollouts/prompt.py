"""NeMo Gym's +prompt_config: a YAML of `user` (and optional `system`) templates that build each row's
responses_create_params.input from the row's top-level fields at collection time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ngym.config.errors import ConfigError
from ngym.config.validation import describe_validation_error
from ngym.rollouts.keys import PARAMS


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str
    system: str | None = None


class Prompt:
    """A loaded prompt file; `apply` fills it from a row (Python str.format placeholders, as NeMo Gym)."""

    def __init__(self, path: Path, config: PromptConfig) -> None:
        self.path = path
        self.config = config

    @classmethod
    def load(cls, path: Path) -> Prompt:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"+prompt_config: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"+prompt_config: {path}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"+prompt_config: {path}: must be a mapping with `user` (and optionally `system`)")
        try:
            return cls(path, PromptConfig.model_validate(data))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, PromptConfig, "", f"+prompt_config {path}")) from None

    def apply(self, row: dict[str, Any], where: str) -> dict[str, Any]:
        """The row with responses_create_params.input built from the templates; its other params are kept.
        A row that already has an input is refused: the two are exclusive, as in NeMo Gym."""
        params = row.get(PARAMS)
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"{where}: '{PARAMS}' must be an object")
        if params and params.get("input"):
            raise ConfigError(
                f"{where}: the row has {PARAMS}.input and +prompt_config={self.path} builds it: use one or the other"
            )
        messages = []
        if self.config.system is not None:
            messages.append({"role": "system", "content": self._fill("system", self.config.system, row, where)})
        messages.append({"role": "user", "content": self._fill("user", self.config.user, row, where)})
        return {**row, PARAMS: {**(params or {}), "input": messages}}

    def _fill(self, part: str, template: str, row: dict[str, Any], where: str) -> str:
        try:
            return template.format_map(row)
        except KeyError as exc:
            fields = ", ".join(sorted(row)) or "none"
            raise ConfigError(
                f"{where}: the `{part}` template of {self.path} uses field {exc}, which the row does not have "
                f"(its fields: {fields})"
            ) from None
        except (IndexError, AttributeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: the `{part}` template of {self.path} cannot be filled: {exc}") from None
