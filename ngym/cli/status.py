"""ng_status: list the servers of the running ng_run and whether each answers, each replica that is down or
starting again, and each restart of a replica (how its process ended, its last lines).

Usage: ng_status [+head_server.port=11000] [+json=true | --json]

Under each model server, one line per vLLM server: ngym's requests in flight and turns there, and vLLM's own
running and waiting requests, KV-cache use and prefix-cache hit rate (ngym.observability.status_view).
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from ngym.cli.common import repo_root, run_cli
from ngym.config.errors import ConfigError
from ngym.config.instances import DEFAULT_HEAD_PORT, DEFAULT_HOST, connect_host
from ngym.config.load import load_config
from ngym.observability.status_view import vllm_lines
from ngym.servers.gym_load import gym_servers


def run(args: list[str]) -> int:
    """ng_status [+head_server.port=N] [+json=true | --json]: list the running servers and whether each answers."""
    as_json = "--json" in args
    values = load_config([arg for arg in args if arg != "--json"], repo_root(), use_env_file=False).values
    unknown = sorted(set(values) - {"head_server", "json"})
    if unknown:
        raise ConfigError(f"unknown arguments: {', '.join(unknown)} (ng_status takes +head_server.port and +json)")
    head = values.get("head_server") or {}
    host, port = connect_host(str(head.get("host") or DEFAULT_HOST)), int(head.get("port") or DEFAULT_HEAD_PORT)
    servers = gym_servers(host, port)
    if as_json or values.get("json"):
        print(orjson.dumps(servers).decode())
    else:
        for server in servers:
            kind = f"{server['server_type']}/{server['implementation']}"
            print(f"{server['name']:<32} {kind:<40} {server.get('url') or '-':<28} {server['status']}")
            for line in vllm_lines(server):
                print(line)
            for replica in server.get("replicas") or []:
                if replica.get("state", "up") != "up":
                    print(f"  {replica.get('label')} at {replica.get('url')} is {replica['state']} (restarting)")
                if replica.get("restarts"):
                    print(f"  {restart_note(replica)}")
    return 1 if any(server["status"] != "ok" for server in servers) else 0


def restart_note(replica: dict[str, Any]) -> str:
    """`simple_weather#0 at <url> restarted 1 time(s), last after killed by signal SIGKILL; the process before
    printed last:` and those lines."""
    lines = "\n".join(f"    | {line}" for line in replica.get("last_output") or []) or "    | (no output)"
    return (
        f"{replica.get('label')} at {replica.get('url')} restarted {replica['restarts']} time(s), last after "
        f"{replica.get('last_exit') or 'an exit Ray saw'}; the process before printed last:\n{lines}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_cli("ng_status", run, argv)


if __name__ == "__main__":
    sys.exit(main())
