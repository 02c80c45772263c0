"""A NeMo Gym server's process (an environment, or an agent such as gymnasium_agent):
`python -m ngym.nemo_gym_envs.serve --instance LABEL --fd N --tree DIR --folder DIR`, run on the server's own
virtual environment, its launch (ngym's ServerLaunch, JSON) on standard input.

As NeMo Gym runs a server: the server's folder is the working directory and first on `sys.path`, its tree (the
folder above `resources_servers/` and `responses_api_agents/`) after ngym's `nemo_gym` package, so sibling files
and other servers' folders import and our `nemo_gym` is the one found; Ray, should the code start one, is kept on
127.0.0.1 (`nemo_gym._ray_local`); then `app.py` runs as `__main__`, whose `run_webserver()` serves on the socket
ng_run bound.
"""

from __future__ import annotations

import argparse
import ast
import os
import runpy
import sys
import types
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from ngym.lifetime import die_with_parent_if_asked

COMPAT_DIR = Path(__file__).resolve().parent / "compat"
# The tree's top-level folders an environment's code imports from (swemer_v1 imports NeMo Gym's
# `responses_api_agents.swe_agents`); in the environment's process they are the tree's, never ngym's own.
TREE_PACKAGES = ("resources_servers", "responses_api_agents", "responses_api_models")


def global_config(launch: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """NeMo Gym's view of the run for this server: the run-wide settings, its own instance's section, and every
    other instance as `{type: {implementation: {host, port}}}`; and each instance's first URL."""
    config: dict[str, Any] = dict(launch.get("settings") or {})
    urls: dict[str, str] = {}
    for name, entry in (launch.get("directory") or {}).items():
        if not entry.get("urls"):
            continue
        url = entry["urls"][0]
        parts = urlsplit(url)
        urls[name] = url
        address = {"host": parts.hostname, "port": parts.port}
        config[name] = {entry["server_type"]: {entry["implementation"]: address}}
    section = dict(launch["section"])
    config[launch["instance"]] = {launch["server_type"]: {launch["implementation"]: section}}
    return config, urls


def enter_environment(tree: Path, folder: Path) -> None:
    """This process as the environment's own: its folder first on `sys.path`, as `python app.py` has it, then our
    `nemo_gym` (before the tree, which holds NeMo Gym's own), then the tree; and the tree's packages bound."""
    for path in (str(tree), str(COMPAT_DIR), str(folder)):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
    bind_tree_packages(tree)


def bind_tree_packages(tree: Path) -> None:
    """`resources_servers.<other>` (and the tree's other top-level folders) import from the environment's tree.
    NeMo Gym's published files hold them as namespace packages (no `__init__.py`), and Python prefers a regular
    package of that name anywhere on `sys.path` (ngym's own, through the venv's `.pth`) over a namespace one, so
    the tree's folder is bound to the name."""
    for name in TREE_PACKAGES:
        folder = tree / name
        if folder.is_dir() and not (folder / "__init__.py").is_file():
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package


def _has_main_block(app: Path) -> bool:
    tree = ast.parse(app.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)
        for node in tree.body
    )


def _server_class(namespace: dict[str, Any]) -> Any:
    from nemo_gym.server_utils import SimpleServer

    found = [
        value
        for value in namespace.values()
        if isinstance(value, type) and issubclass(value, SimpleServer) and value.__module__ == "__main__"
    ]
    concrete = [cls for cls in found if not getattr(cls, "__abstractmethods__", None)]
    if len(concrete) != 1:
        raise RuntimeError(f"app.py has no __main__ block and defines {len(concrete)} concrete servers, not one")
    return concrete[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instance", required=True)
    parser.add_argument("--fd", required=True, type=int)
    parser.add_argument("--tree", required=True, type=Path)
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--entrypoint", default="app.py")
    args = parser.parse_args(argv)
    die_with_parent_if_asked()
    launch = orjson.loads(sys.stdin.buffer.read())
    folder, tree = args.folder.resolve(), args.tree.resolve()
    app = folder / args.entrypoint
    config, urls = global_config(launch)

    enter_environment(tree, folder)
    os.chdir(folder)
    from nemo_gym._ray_local import keep_ray_on_loopback
    from nemo_gym._runtime import Runtime, install

    keep_ray_on_loopback()  # before the environment's code can import ray

    install(Runtime(launch["instance"], tree, folder, config, urls, args.fd))
    try:
        if _has_main_block(app):
            runpy.run_path(str(app), run_name="__main__")
        else:
            namespace = runpy.run_path(str(app), run_name="__main__")
            _server_class(namespace).run_webserver()
    except (ImportError, SyntaxError, RuntimeError) as exc:
        print(f"{args.instance}: cannot start NeMo Gym server {folder}: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)  # fmt: skip
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
