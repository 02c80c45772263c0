"""ng_run: start the head server and every server instance in the configuration.

Usage: ng_run "+config_paths=[a.yaml, b.yaml]" [+key=value ...] [++key=value ...]

Configuration sources, lowest priority first: the files in config_paths (relative to the current
directory, the repository root), env.yaml in the current directory, then the command line.
"""

from __future__ import annotations

import sys

import uvloop

from ngym.cli.common import repo_root, run_cli
from ngym.config.load import load_config
from ngym.lifetime import die_with_parent_if_asked
from ngym.servers.supervisor import Supervisor, plan_run


def run(args: list[str]) -> int:
    """ng_run "+config_paths=[a.yaml, b.yaml]" [+key=value ...]: start every server in the configuration."""
    die_with_parent_if_asked()  # started by a tool or a trainer (ngym.api): never outlive it
    plan = plan_run(load_config(args, repo_root()))
    return uvloop.run(Supervisor(plan).run())


def main(argv: list[str] | None = None) -> int:
    return run_cli("ng_run", run, argv)


if __name__ == "__main__":
    sys.exit(main())
