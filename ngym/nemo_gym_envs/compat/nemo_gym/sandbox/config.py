"""Which provider a sandbox uses: a server names a block of the run's configuration (`sandbox_provider: sandbox`,
the block coming from a provider's config file, e.g. `sandbox: {local: {...}, default_metadata: {...}}`) or gives
the block inline. `resolve_provider_config` returns `{provider: settings}` for `create_provider`;
`resolve_provider_metadata` the block's `default_metadata`, merged into each spec's metadata by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

DEFAULT_METADATA_KEY = "default_metadata"
RESERVED_KEYS = frozenset({DEFAULT_METADATA_KEY})


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return dict(value) if isinstance(value, Mapping) else value


def _providers(block: Mapping[str, Any]) -> list[str]:
    return [key for key in block if key not in RESERVED_KEYS]


def _block(sandbox_provider: str | Mapping[str, Any], named_configs: Mapping[str, Any] | None) -> tuple[Any, str]:
    if isinstance(sandbox_provider, str):
        if not sandbox_provider:
            raise ValueError("Sandbox provider reference must be a non-empty string")
        block = named_configs.get(sandbox_provider) if named_configs is not None else None
        if block is None:
            blocks = sorted(
                str(key)
                for key, value in (named_configs or {}).items()
                if isinstance(_plain(value), Mapping) and len(_providers(_plain(value))) == 1
            )
            raise ValueError(
                f"Sandbox provider reference {sandbox_provider!r} is not defined in the merged config: add a "
                f"provider's config file defining a top-level '{sandbox_provider}:' block to config_paths "
                f"(ngym runs the 'local' provider; container providers need their runtime). "
                f"Available sandbox configs: {', '.join(map(repr, blocks)) or '(none)'}"
            )
        return _plain(block), f"reference {sandbox_provider!r}"
    if isinstance(sandbox_provider, Mapping):
        return _plain(sandbox_provider), "inline sandbox_provider config"
    raise TypeError(
        "sandbox_provider must be a name reference (str) or a single-key provider mapping, "
        f"got {type(sandbox_provider).__name__}"
    )


def resolve_provider_config(
    sandbox_provider: str | Mapping[str, Any], named_configs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`{provider_name: settings}` of the named (or inline) block; it must hold exactly one provider."""
    block, source = _block(sandbox_provider, named_configs)
    if not isinstance(block, Mapping):
        raise ValueError(f"Sandbox provider config from {source} must be a mapping, got: {block!r}")
    names = _providers(block)
    if len(names) != 1:
        raise ValueError(
            f"Sandbox provider config from {source} must have exactly one provider key "
            f"{{provider_name: config}}, got keys: {names!r}"
        )
    return {names[0]: block[names[0]]}


def resolve_provider_metadata(
    sandbox_provider: str | Mapping[str, Any], named_configs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The block's `default_metadata` (empty when it has none)."""
    block, source = _block(sandbox_provider, named_configs)
    if not isinstance(block, Mapping):
        raise ValueError(f"Sandbox provider config from {source} must be a mapping, got: {block!r}")
    metadata = block.get(DEFAULT_METADATA_KEY) or {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"Sandbox '{DEFAULT_METADATA_KEY}' from {source} must be a mapping, got: {metadata!r}")
    return dict(metadata)
