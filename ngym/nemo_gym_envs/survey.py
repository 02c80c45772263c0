"""What each of NeMo Gym's resources servers needs, read from its files (never imported):
`python -m ngym.nemo_gym_envs.survey [--tree DIR] [--json]`.

For every `resources_servers/<name>/`: the `nemo_gym` modules and names its Python files import, whether it takes
FastAPI's `Request`, adds routes itself or a catch-all route, imports sibling files as top-level modules or other
servers' folders, overrides the metric hooks, whether its requirements all come from the package registry, whether
its code compiles on this Python, and whether its example rows join its recorded rollouts (golden replay).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from ngym.nemo_gym_envs.golden import golden_cases
from ngym.nemo_gym_envs.package import ensure_package
from ngym.nemo_gym_envs.requirements import parse_requirements


@dataclass
class ServerSurvey:
    name: str
    nemo_modules: dict[str, list[str]] = field(default_factory=dict)  # module -> names imported from it
    takes_request: bool = False
    adds_routes: bool = False
    catch_all_route: bool = False
    sibling_imports: list[str] = field(default_factory=list)
    other_server_imports: list[str] = field(default_factory=list)
    metric_hooks: bool = False
    registry_only: bool = True
    outside_registry: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    compiles: bool = True
    compile_error: str | None = None
    has_main_block: bool = False
    pairs_with_simple_agent: bool = False
    judge_in_config: bool = False
    golden_rows: int = 0  # example.jsonl rows whose responses_create_params has a recorded rollout


def survey_server(folder: Path) -> ServerSurvey:
    result = ServerSurvey(folder.name)
    siblings = {p.stem for p in folder.glob("*.py")} | {
        p.name for p in folder.iterdir() if (p / "__init__.py").is_file()
    }
    for source in sorted(_python_files(folder)):
        text = source.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(text, filename=str(source))
            compile(text, str(source), "exec")
        except SyntaxError as exc:
            result.compiles = False
            result.compile_error = f"{source.relative_to(folder)}:{exc.lineno}: {exc.msg}"
            continue
        _scan(tree, result, siblings, is_app=source == folder / "app.py")
    requirements = parse_requirements(folder / "requirements.txt")
    result.requirements = requirements.registry_lines
    result.outside_registry = [req.line for req in requirements.outside_registry]
    result.registry_only = not result.outside_registry
    configs = " ".join(p.read_text(encoding="utf-8") for p in (folder / "configs").glob("*.yaml"))
    result.pairs_with_simple_agent = "simple_agent:" in configs
    result.judge_in_config = "judge_model_server" in configs
    result.golden_rows = len(golden_cases(folder / "data"))
    result.sibling_imports.sort()
    result.other_server_imports.sort()
    return result


def _python_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.py") if "tests" not in p.relative_to(folder).parts]


def _scan(tree: ast.Module, result: ServerSurvey, siblings: set[str], is_app: bool) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            _imported(node.module, [alias.name for alias in node.names], result, siblings)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                _imported(alias.name, [], result, siblings)
        elif isinstance(node, ast.Attribute) and node.attr in ("post", "get", "api_route", "add_api_route"):
            if isinstance(node.value, ast.Name) and node.value.id == "app":
                result.adds_routes = True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("/{"):
            result.catch_all_route = True
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name in ("compute_metrics", "get_key_metrics"):
                result.metric_hooks = True
            for arg in node.args.args:
                annotation = arg.annotation
                if isinstance(annotation, ast.Name) and annotation.id == "Request":
                    result.takes_request = True
        elif is_app and isinstance(node, ast.If) and _is_main_check(node.test):
            result.has_main_block = True


def _imported(module: str, names: list[str], result: ServerSurvey, siblings: set[str]) -> None:
    top = module.split(".")[0]
    if top == "nemo_gym":
        known = result.nemo_modules.setdefault(module, [])
        known.extend(name for name in names if name not in known)
    elif top == "resources_servers":
        owner = module.split(".")[1] if "." in module else ""
        if owner != result.name and module not in result.other_server_imports:
            result.other_server_imports.append(module)
    elif top in siblings and top not in result.sibling_imports:
        result.sibling_imports.append(top)


def _is_main_check(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def survey_tree(tree: Path) -> list[ServerSurvey]:
    folders = sorted(p for p in (tree / "resources_servers").iterdir() if (p / "app.py").is_file())
    return [survey_server(folder) for folder in folders]


def summary(servers: list[ServerSurvey]) -> list[str]:
    modules: Counter[str] = Counter()
    names: Counter[str] = Counter()
    for server in servers:
        for module, imported in server.nemo_modules.items():
            modules[module] += 1
            names.update(f"{module}.{name}" for name in imported)
    count = len(servers)
    lines = [
        f"resources servers: {count}",
        f"  importing nemo_gym at all: {sum(1 for s in servers if s.nemo_modules)}",
        f"  requirements all from the registry: {sum(s.registry_only for s in servers)}",
        f"  compile on Python {sys.version_info.major}.{sys.version_info.minor}: {sum(s.compiles for s in servers)}",
        f"  take FastAPI's Request: {sum(s.takes_request for s in servers)}",
        f"  add routes with app.post/get: {sum(s.adds_routes for s in servers)}",
        f"  catch-all route: {sum(s.catch_all_route for s in servers)}",
        f"  override compute_metrics / get_key_metrics: {sum(s.metric_hooks for s in servers)}",
        f"  import sibling files as top-level modules: {sum(bool(s.sibling_imports) for s in servers)}",
        f"  import other servers' folders: {sum(bool(s.other_server_imports) for s in servers)}",
        f"  pair with simple_agent: {sum(s.pairs_with_simple_agent for s in servers)}",
        f"  name a judge model server: {sum(s.judge_in_config for s in servers)}",
        f"  example rows joining recorded rollouts: {sum(1 for s in servers if s.golden_rows)}",
        "nemo_gym modules (servers importing each):",
        *(f"  {module}: {n}" for module, n in modules.most_common()),
        "names (servers importing each, top 40):",
        *(f"  {name}: {n}" for name, n in names.most_common(40)),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, help="a NeMo Gym tree (default: the package, fetched once)")
    parser.add_argument("--json", action="store_true", help="every server's survey as JSON")
    args = parser.parse_args(argv)
    servers = survey_tree(args.tree or ensure_package())
    if args.json:
        sys.stdout.buffer.write(orjson.dumps([asdict(s) for s in servers], option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print("\n".join(summary(servers)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
