"""Packages an environment uses without listing them, because installing nemo-gym brought them.

NeMo Gym's environments list `-e nemo-gym[dev]` and then import what nemo-gym depends on (pandas through
`datasets`, numpy, scipy, tqdm, ...) without naming it. ngym replaces that line with its own `nemo_gym`, so the
modules the environment's server imports (its `app.py` and the environment's own files it imports, read, never
run) that nemo-gym's own dependencies provide are installed from the registry instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ngym.nemo_gym_envs.requirements import Requirements

# Top-level module -> the distribution that provides it, for what nemo-gym 0.7.0 installs (directly or through
# its dependencies) and environments import.
NEMO_GYM_PROVIDES = {
    "pandas": "pandas",
    "numpy": "numpy",
    "scipy": "scipy",
    "datasets": "datasets",
    "pyarrow": "pyarrow",
    "tqdm": "tqdm",
    "jinja2": "jinja2",
    "psutil": "psutil",
    "rich": "rich",
    "yaml": "pyyaml",
    "requests": "requests",
    "httpx": "httpx",
    "anthropic": "anthropic",
    "mcp": "mcp",
    "packaging": "packaging",
    "devtools": "devtools",
    "hydra": "hydra-core",
    "huggingface_hub": "huggingface_hub",
    "filelock": "filelock",
    "jwt": "PyJWT",
    "sqlparse": "sqlparse",
    "git": "GitPython",
}


def _imports(source: Path) -> set[str]:
    """The modules one file imports, dotted (absolute imports only)."""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8", errors="replace"), filename=str(source))
    except (OSError, SyntaxError):
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _local_file(module: str, folder: Path) -> Path | None:
    """The environment's own file a dotted module names (as a sibling, or as `resources_servers.<env>....`)."""
    parts = module.split(".")
    if parts[:2] == ["resources_servers", folder.name]:
        parts = parts[2:]
    if not parts:
        return None
    base = folder.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(folder: Path, entrypoint: str = "app.py") -> set[str]:
    """The top-level modules the environment's server imports: its entrypoint and the environment's own files
    it imports, transitively (offline scripts such as dataset preparation are not followed)."""
    pending = [folder / entrypoint]
    seen: set[Path] = set()
    found: set[str] = set()
    while pending:
        source = pending.pop()
        if source in seen or not source.is_file():
            continue
        seen.add(source)
        for module in _imports(source):
            local = _local_file(module, folder)
            if local is not None:
                pending.append(local)
            else:
                found.add(module.split(".")[0])
    return found


def implied_requirements(folder: Path, requirements: Requirements) -> list[str]:
    """What nemo-gym would have installed for this environment and its requirements do not name (none when the
    environment does not install nemo-gym)."""
    if not requirements.nemo_gym_lines:
        return []
    named = {(req.name or "").lower().replace("_", "-") for req in requirements.installable}
    wanted = {NEMO_GYM_PROVIDES[module] for module in imported_modules(folder) if module in NEMO_GYM_PROVIDES}
    return sorted(dist for dist in wanted if dist.lower().replace("_", "-") not in named)
