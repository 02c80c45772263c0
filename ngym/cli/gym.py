"""`gym`: NeMo Gym's newer command names as aliases of the documented ng_* commands.

gym env start ...   = ng_run ...
gym env status ...  = ng_status ...
gym eval run ...    = ng_collect_rollouts ...
gym test ...        = ng_test ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ngym.cli import collect, run, status, test

ALIASES: dict[tuple[str, ...], Callable[[list[str] | None], int]] = {
    ("env", "start"): run.main,
    ("env", "status"): status.main,
    ("eval", "run"): collect.main,
    ("test",): test.main,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for words, command in ALIASES.items():
        if tuple(args[: len(words)]) == words:
            return command(args[len(words) :])
    print(__doc__, file=sys.stderr)
    return 0 if args[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
