"""What every command-line tool shares: the repository root, error reporting, exit codes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ngym.config.errors import ConfigError
from ngym.config.secrets import redact_text

EXIT_CONFIG_ERROR = 2


def repo_root() -> Path:
    """Config paths, env.yaml and data paths are relative to the directory the tool is started in."""
    return Path.cwd()


def run_cli(tool: str, body: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(body.__doc__ or tool)
        return 0
    try:
        return body(args)
    except ConfigError as exc:
        print(f"{tool}: error: {redact_text(str(exc))}", file=sys.stderr)  # a URL's password never shown
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        print(f"{tool}: interrupted", file=sys.stderr)
        return 130
