"""Packages an environment uses without listing them, because installing nemo-gym brought them.

NeMo Gym's environments list `-e nemo-gym[dev]` and then import what nemo-gym depends on (pandas through
`datasets`, numpy, scipy, tqdm, ...) without naming it. ngym replaces that line with its own `nemo_gym`, so the
modules the environment's server imports (its `app.py` and the environment's own files it imports, read, never
run) that nemo-gym's own dependencies provide are installed from the registry instead.

Two cases reach past the imports:
- Ray (nemo-gym depends on it): installed when the code imports `ray`; ngym's `nemo_gym` then starts a local Ray
  that listens on 127.0.0.1 only (`compat/nemo_gym/_ray_local.py`).
- A server that runs Python with its own interpreter (`sys.executable`: nvarc runs the model's code so) gets the
  numeric stack nemo-gym brings (`numpy`, `scipy`), which that code imports under NeMo Gym.
Only the venvs of environments that need them change (a venv is named by the hash of its list of packages).
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
    "ray": "ray",
}
# What nemo-gym's installation gives code the server runs with its own interpreter (`sys.executable`).
OWN_INTERPRETER_GETS = ("numpy", "scipy")


def _scan(source: Path) -> tuple[set[str], bool]:
    """The modules one file imports, dotted (absolute imports only), and whether it names `sys.executable`."""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8", errors="replace"), filename=str(source))
    except (OSError, SyntaxError):
        return set(), False
    found: set[str] = set()
    own_interpreter = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Attribute) and node.attr == "executable":
            own_interpreter = own_interpreter or (isinstance(node.value, ast.Name) and node.value.id == "sys")
    return found, own_interpreter


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


def server_code(folder: Path, entrypoint: str = "app.py") -> tuple[set[str], bool]:
    """The top-level modules the environment's server imports (its entrypoint and the environment's own files it
    imports, transitively; offline scripts such as dataset preparation are not followed), and whether any of
    those files runs its own interpreter (`sys.executable`)."""
    pending = [folder / entrypoint]
    seen: set[Path] = set()
    found: set[str] = set()
    own_interpreter = False
    while pending:
        source = pending.pop()
        if source in seen or not source.is_file():
            continue
        seen.add(source)
        modules, runs_python = _scan(source)
        own_interpreter = own_interpreter or runs_python
        for module in modules:
            local = _local_file(module, folder)
            if local is not None:
                pending.append(local)
            else:
                found.add(module.split(".")[0])
    return found, own_interpreter


def imported_modules(folder: Path, entrypoint: str = "app.py") -> set[str]:
    return server_code(folder, entrypoint)[0]


def implied_requirements(folder: Path, requirements: Requirements) -> list[str]:
    """What nemo-gym would have installed for this environment and its requirements do not name (none when the
    environment does not install nemo-gym)."""
    if not requirements.nemo_gym_lines:
        return []
    named = {(req.name or "").lower().replace("_", "-") for req in requirements.installable}
    modules, own_interpreter = server_code(folder)
    wanted = {NEMO_GYM_PROVIDES[module] for module in modules if module in NEMO_GYM_PROVIDES}
    if own_interpreter:
        wanted.update(OWN_INTERPRETER_GETS)
    return sorted(dist for dist in wanted if dist.lower().replace("_", "-") not in named)
