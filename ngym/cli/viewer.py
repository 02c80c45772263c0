"""ng_viewer: look at a rollout file in the browser.

Usage: ng_viewer +jsonl_fpath=results/vllm_rollouts.jsonl [+host=127.0.0.1] [+port=7860]
                 [+tokenizer=<model dir>] [+compare_jsonl_fpath=<other rollouts>] [+pass_threshold=1.0]
                 [+allowed_hosts=[<name>, ...]] [+head_server.port=11000]

The page answers only to its own host names (127.0.0.1, localhost, [::1], +host, and +allowed_hosts). Served on
an address other machines can reach (+host other than loopback), it asks for a token, printed in its address.
With +head_server.port (and +head_server.host), the page's Gym view shows that running ng_run's servers and the
load of each vLLM server, as ng_status does.
"""

from __future__ import annotations

import difflib
import errno
import secrets
import sys
from pathlib import Path
from typing import Any

import uvloop
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ngym.cli.common import repo_root, run_cli
from ngym.config.errors import ConfigError
from ngym.config.instances import DEFAULT_HEAD_PORT, DEFAULT_HOST, connect_host
from ngym.config.load import load_config
from ngym.http.app import EmbeddedUvicorn, bind_socket, uvicorn_config
from ngym.http.hosts import allowed_hosts, hosts_setting, is_loopback
from ngym.viewer.server import viewer_app
from ngym.viewer.state import Viewer, ViewerConfig
from ngym.viewer.tokens import Vocab

DEFAULT_PORT = 7860  # NeMo Gym's Gradio viewer's


class ViewerArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jsonl_fpath: str = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    tokenizer: str | None = None
    compare_jsonl_fpath: str | None = None
    pass_threshold: float = 1.0
    allowed_hosts: list[str] | str | None = None
    head_server: dict[str, Any] | None = None  # {port, host} of a running ng_run: the Gym view


def parse(args: list[str]) -> ViewerArgs:
    values = load_config(args, repo_root(), use_env_file=False).values
    known = list(ViewerArgs.model_fields)
    for key in values:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean +{near[0]}?)" if near else ""
            raise ConfigError(f"unknown argument +{key}{hint}; ng_viewer takes {', '.join('+' + k for k in known)}")
    if "jsonl_fpath" not in values:
        raise ConfigError("missing +jsonl_fpath=<rollouts file>, e.g. +jsonl_fpath=results/vllm_rollouts.jsonl")
    try:
        return ViewerArgs.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"+{key}={values.get(key)!r}: {error['msg']}") from None


def _file(key: str, raw: str, *, may_not_exist_yet: bool = False) -> Path:
    path = Path(raw).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if path.is_dir():
        raise ConfigError(f"+{key}={raw}: {path} is a folder, not a rollouts file (.jsonl)")
    if path.is_file() or (may_not_exist_yet and path.parent.is_dir()):
        return path  # a run that has not written its first rollout yet: the page fills in when it does
    raise ConfigError(f"+{key}={raw}: no such file {path}")


def config_from(args: ViewerArgs) -> ViewerConfig:
    rollouts = _file("jsonl_fpath", args.jsonl_fpath, may_not_exist_yet=True)
    compare = _file("compare_jsonl_fpath", args.compare_jsonl_fpath) if args.compare_jsonl_fpath else None
    vocab = None
    if args.tokenizer:
        directory = Path(args.tokenizer).expanduser()
        vocab = Vocab.load(directory if directory.is_absolute() else Path.cwd() / directory, name=args.tokenizer)
    head = None
    if args.head_server is not None:
        host = connect_host(str(args.head_server.get("host") or DEFAULT_HOST))
        head = (host, int(args.head_server.get("port") or DEFAULT_HEAD_PORT))
    return ViewerConfig(rollouts, compare, vocab, args.pass_threshold, label=args.jsonl_fpath, gym_head=head)


def run(args: list[str]) -> int:
    """ng_viewer +jsonl_fpath=<rollouts.jsonl> [+host] [+port] [+tokenizer] [+compare_jsonl_fpath] [+pass_threshold]
    [+allowed_hosts]: serve a page over the rollouts (summary, table, conversations, groups, tokens, comparison),
    following the file while ng_collect_rollouts writes it."""
    parsed = parse(args)
    config = config_from(parsed)
    hosts = allowed_hosts(parsed.host, hosts_setting(parsed.allowed_hosts, "+allowed_hosts"))
    try:
        sock = bind_socket(parsed.host, parsed.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"+port={parsed.port}: the port is in use; pass another (+port=0 picks a free one)"
            ) from None
        raise ConfigError(f"+host={parsed.host} +port={parsed.port}: cannot listen there: {exc.strerror}") from None
    port = sock.getsockname()[1]
    # Off loopback, anyone who can reach the port could read the rollouts: a token, as notebook servers ask.
    token = None if is_loopback(parsed.host) else secrets.token_urlsafe(32)
    shown_host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    address = f"http://{shown_host}:{port}/" + (f"?token={token}" if token else "")
    print(f"ng_viewer: {config.rollouts} at {address} (Ctrl-C stops)", flush=True)
    if not config.rollouts.exists():
        print(f"ng_viewer: {config.rollouts} does not exist yet; its rows appear as they are written", flush=True)
    if token:
        print(
            f"ng_viewer: +host={parsed.host} can be reached from other machines: the page asks for the token in the "
            "address above; it answers to the names "
            f"{', '.join(sorted(hosts))} (+allowed_hosts=[...] adds more)",
            file=sys.stderr,
            flush=True,
        )
    uvloop.run(_serve(Viewer(config), sock, parsed.host, port, hosts, token))
    return 0


async def _serve(viewer: Viewer, sock: object, host: str, port: int, hosts: frozenset[str], token: str | None) -> None:
    server = EmbeddedUvicorn(uvicorn_config(viewer_app(viewer, hosts=hosts, token=token), host=host, port=port))
    server.stop_on_signals()
    await server.serve(sockets=[sock])  # type: ignore[list-item]


def main(argv: list[str] | None = None) -> int:
    return run_cli("ng_viewer", run, argv)


if __name__ == "__main__":
    sys.exit(main())
