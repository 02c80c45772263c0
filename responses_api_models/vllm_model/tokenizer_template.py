"""The chat template of `tokenizer` (completions mode, render_chat_template): NeMo Gym loads that tokenizer to
render prompts, typically to lend a base model its instruct sibling's template. ngym reads only the template, from
a local directory or the Hugging Face cache (nothing is downloaded), and has vLLM render with it."""

from __future__ import annotations

import json
import os
from pathlib import Path

TEMPLATE_FILE = "chat_template.jinja"
CONFIG_FILE = "tokenizer_config.json"


class TemplateNotFound(ValueError):
    """No chat template could be read for the configured tokenizer; the message says where it looked."""


def load_chat_template(tokenizer: str) -> str:
    directory = tokenizer_directory(tokenizer)
    template_file = directory / TEMPLATE_FILE
    if template_file.is_file():
        return template_file.read_text()
    config_file = directory / CONFIG_FILE
    if config_file.is_file():
        template = _template_from_config(config_file)
        if template:
            return template
    raise TemplateNotFound(
        f"tokenizer {tokenizer!r} ({directory}) has no chat template ({TEMPLATE_FILE}, or chat_template in "
        f"{CONFIG_FILE}); point tokenizer at a model whose tokenizer ships one, or set render_chat_template: false"
    )


def tokenizer_directory(tokenizer: str) -> Path:
    """A local directory as given (relative to the directory ng_run runs in), else the newest snapshot of the
    Hugging Face model id in the local cache."""
    local = Path(tokenizer).expanduser()
    if local.is_dir():
        return local
    snapshots = _hub_cache() / f"models--{tokenizer.replace('/', '--')}" / "snapshots"
    found = sorted(snapshots.glob("*/"), key=lambda p: p.stat().st_mtime) if snapshots.is_dir() else []
    if found:
        return found[-1]
    raise TemplateNotFound(
        f"tokenizer {tokenizer!r} is neither a local directory nor in the Hugging Face cache ({snapshots.parent}); "
        "give the directory of the tokenizer whose chat template should render prompts"
    )


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


def _template_from_config(config_file: Path) -> str | None:
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise TemplateNotFound(f"cannot read {config_file}: {exc}") from None
    template = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template else None
