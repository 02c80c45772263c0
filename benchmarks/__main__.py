"""`python -m benchmarks [model_server] [rollouts] [profile] [viewer] [environments] [chaos]`: run benchmarks, print
tables, write JSON.

With no names, runs model_server and rollouts (profile needs py-spy, viewer writes a 2 GiB file, environments
installs and replays NeMo Gym's environments, chaos kills servers during a collection: all run by name). Results go to
benchmarks/results/bench-<time>.json and benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import chaos, environments, model_server, profile, rollouts, viewer
from benchmarks.report import (
    exact_vs_chat_table,
    load_snapshot,
    machine,
    markdown,
    model_server_table,
    profile_tables,
    rollouts_table,
)
from ngym.nemo_gym_envs.package import ensure_package

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("model_server", "rollouts", "profile", "viewer", "environments", "chaos")
BUSY_WARNING = 0.5  # a core's share used by other processes before a run that makes its numbers suspect


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"{', '.join(NAMES)}; default: the first two")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per load point")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds of load before each measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=list(model_server.MODES),
        default=list(model_server.Settings().modes),
        help="model_server and profile: plain, token_info (chat path), token_exact (exact path); plain_no_metrics "
        "(plain with metrics: false, the baseline of the metrics' overhead)",
    )
    parser.add_argument(
        "--turns",
        nargs="+",
        choices=model_server.TURNS,
        default=list(model_server.TURNS),
        help="model_server: the first turn, the second (history with token data)",
    )
    parser.add_argument("--rollouts", type=int, default=2000)
    parser.add_argument(
        "--rollout-modes",
        nargs="+",
        choices=list(model_server.MODES),
        default=["plain"],
        help="rollouts: the model server's mode (token_info and token_exact: training mode on each path)",
    )
    parser.add_argument("--parallel", type=int, default=64, help="ng_collect_rollouts' num_samples_in_parallel")
    parser.add_argument("--profile-concurrency", type=int, default=64)
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-turn", choices=model_server.TURNS, default="first")
    parser.add_argument("--python-only", action="store_true", help="profile: Python frames only (no --native)")
    parser.add_argument("--viewer-rows", type=int, default=1_000_000, help="viewer: rows in the generated file")
    parser.add_argument("--envs", nargs="+", default=[], help="environments: these only (default: every candidate)")
    parser.add_argument("--chaos-rollouts", type=int, default=3000, help="chaos: rollouts in the collection")
    parser.add_argument("--chaos-kills", type=int, default=30, help="chaos: kill -9s at random moments")
    parser.add_argument("--chaos-seed", type=int, default=20261205, help="chaos: the seed of the kills")
    parser.add_argument("--install-s", type=float, default=120.0, help="environments: install limit per environment")
    parser.add_argument("--start-s", type=float, default=60.0, help="environments: start-up limit per environment")
    parser.add_argument("--replay-s", type=float, default=120.0, help="environments: no new row after this long")
    parser.add_argument("--skip-done", action="store_true", help="environments: keep results already saved")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return args


def _check_load(snapshot: dict[str, Any]) -> None:
    busy = [p for p in snapshot["busy_processes"] if p["cpu_share"] >= BUSY_WARNING]
    print(f"load average {' '.join(snapshot['loadavg'])}", flush=True)
    for process in busy:
        print(f"WARNING: pid {process['pid']} uses {process['cpu_share']:.0%} of a core: {process['command']}")
    if busy:
        print("WARNING: other work competes for the CPU; throughput and latency below are pessimistic.", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    names = args.names or ["model_server", "rollouts"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {"machine": machine(), "command": " ".join(["python -m benchmarks", *sys.argv[1:]])}
    document["load_before"] = before = load_snapshot()
    _check_load(before)
    started = time.monotonic()
    if "model_server" in names:
        print("\n== model_server: one vllm_model process (ng_run) in front of the vLLM stand-in", flush=True)
        settings = replace(
            model_server.Settings(),
            concurrencies=tuple(args.concurrency),
            modes=tuple(args.modes),
            turns=tuple(args.turns),
            warmup_s=args.warmup,
            duration_s=args.duration,
        )
        document["model_server"] = rows = model_server.run(settings, log=_log)
        print("\n" + model_server_table(rows), flush=True)
        if ratios := exact_vs_chat_table(rows):
            print("\ntoken-exact path against the chat path (model server):\n\n" + ratios, flush=True)
    if "rollouts" in names:
        print("\n== rollouts: ng_collect_rollouts -> simple_agent -> vllm_model -> stand-in", flush=True)
        document["rollouts"] = results = []
        for mode in args.rollout_modes:
            rollout_settings = replace(rollouts.Settings(), rollouts=args.rollouts, parallel=args.parallel, mode=mode)
            results.append(rollouts.run(rollout_settings, log=_log))
            print("\n" + rollouts_table(results[-1]), flush=True)
    if "profile" in names:
        print(f"\n== profile: py-spy on the model server at concurrency {args.profile_concurrency}", flush=True)
        profile_settings = replace(
            profile.Settings(),
            concurrency=args.profile_concurrency,
            modes=tuple(args.modes),
            turn=args.profile_turn,
            seconds=args.profile_seconds,
            native=not args.python_only,
        )
        document["profile"] = summaries = profile.run(profile_settings, log=_log)
        for summary in summaries:
            print("\n" + profile_tables(summary), flush=True)
    if "viewer" in names:
        print(f"\n== viewer: ng_viewer over a generated {args.viewer_rows:,}-row rollout file", flush=True)
        document["viewer"] = result = viewer.run(replace(viewer.Settings(), rows=args.viewer_rows), log=_log)
        print("\n" + viewer.report(result), flush=True)
    if "environments" in names:
        print("\n== environments: install, start, golden-replay NeMo Gym's CPU-deterministic ones", flush=True)
        env_settings = environments.Settings(
            tuple(args.envs), args.install_s, args.start_s, args.replay_s, skip_done=args.skip_done
        )
        found = environments.run(ensure_package(), env_settings, log=_log)
        document["environments"] = environments.totals(found)
        text = environments.table(found)
        environments.write_table(environments.DOC, text)
        print("\n" + text + f"\n\ntable written to {environments.DOC}", flush=True)
    if "chaos" in names:
        print("\n== chaos: kill -9 random servers at random moments of a collection", flush=True)
        chaos_settings = replace(
            chaos.Settings(), rollouts=args.chaos_rollouts, kills=args.chaos_kills, seed=args.chaos_seed
        )
        document["chaos"] = chaos_result = chaos.run(chaos_settings, log=_log)
        print("\n" + chaos.report(chaos_result), flush=True)
    document["load_after"] = after = load_snapshot()
    document["wall_s"] = round(time.monotonic() - started, 1)
    _check_load(after)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(document, indent=2) + "\n")
    if set(names) - {"environments", "chaos"}:  # the performance results (not the environments table, not chaos)
        (RESULTS / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
        (RESULTS / "latest.md").write_text(markdown(document))
    print(f"\nresults: {RESULTS / f'bench-{stamp}.json'} ({document['wall_s']:.0f} s)")
    return 0


def _log(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
