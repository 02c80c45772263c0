"""`gym`: NeMo Gym's newer command line, flags included, over ngym's commands.

gym env start  [--config PATH] [--resources-server NAME] [--model-type NAME] [--model M] [--model-url URL]
               [--model-api-key K] [+key=value ...]                      = ng_run
gym env status [--json]                                                  = ng_status
gym eval run   [env start's flags] [--agent A] [--input IN] [--output OUT] [--limit N] [--num-repeats K]
               [--concurrency P] [--prompt-config YAML] [--resume] [--temperature T] [--top-p P]
               [--max-output-tokens N] [--split TYPE]      = start the servers, ng_collect_rollouts, stop them
gym eval run --no-serve [the same flags]                                 = ng_collect_rollouts (servers running)
gym env test --resources-server NAME | gym test +entrypoint=...          = ng_test

Flags and Hydra overrides (+key=value) mix freely; see ngym/cli/gym_flags.py for how each flag maps.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ngym.cli import collect, eval_run, run, status, test
from ngym.cli.common import repo_root, run_cli
from ngym.cli.gym_flags import parser_for, translate


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    configs: bool = False
    model: bool = False
    collect: bool = False
    json_output: bool = False


COMMANDS = (
    Command(("env", "start"), configs=True, model=True),
    Command(("env", "status"), json_output=True),
    Command(("eval", "run"), configs=True, model=True, collect=True),
    Command(("env", "test")),
    Command(("test",)),
)


def dispatch(command: Command, argv: list[str]) -> int:
    name = " ".join(command.words)
    if command.words in (("env", "test"), ("test",)):
        return test.main(_test_args(argv))
    parser = parser_for(name, configs=command.configs, model=command.model, collect=command.collect,
                        json_output=command.json_output)  # fmt: skip
    if any(arg in ("-h", "--help") for arg in argv):
        parser.print_help()
        return 0

    def translated(args: list[str]) -> int:
        parsed = translate(parser, args, repo_root())
        if command.words == ("env", "start"):
            return run.run(parsed.overrides)
        if command.words == ("env", "status"):
            return status.run(parsed.overrides)
        if parsed.no_serve:
            return collect.run(parsed.overrides)
        return eval_run.run_end_to_end(parsed.overrides)

    return run_cli(f"gym {name}", translated, argv)


def _test_args(argv: list[str]) -> list[str]:
    """`--resources-server NAME` -> `+entrypoint=resources_servers/NAME`, as NeMo Gym's env test maps it."""
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--resources-server":
            out.append(f"+entrypoint=resources_servers/{next(args, '')}")
        elif arg.startswith("--resources-server="):
            out.append(f"+entrypoint=resources_servers/{arg.split('=', 1)[1]}")
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for command in COMMANDS:
        if tuple(args[: len(command.words)]) == command.words:
            return dispatch(command, args[len(command.words) :])
    print(__doc__, file=sys.stderr)
    return 0 if args[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
