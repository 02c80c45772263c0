"""A real Ray cluster on this machine for tests: a head node and a second node carrying a custom
resource that stands for a second machine, every one on 127.0.0.1; and what listens off loopback."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SECOND_MACHINE = "second_machine"
# Ray swaps a loopback address for this machine's external one unless told it runs on one host; usage
# statistics would try to reach the internet. Set before Ray is imported.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass(frozen=True)
class RayCluster:
    address: str
    listening_before: frozenset[tuple[str, int]]  # sockets listening off loopback before the cluster started
    session_dir: Path  # Ray's logs and files of this cluster
    second_machine: str = SECOND_MACHINE

    def new_listeners_off_loopback(self) -> set[tuple[str, int]]:
        """Listeners off loopback that this test process and its descendants (the cluster, ng_run and its
        servers) opened; other processes on the machine (another test worker's) are not the cluster's."""
        return set(off_loopback_listeners(owned_by=os.getpid()) - self.listening_before)


def off_loopback_listeners(owned_by: int | None = None) -> frozenset[tuple[str, int]]:
    """(address, port) of every TCP socket listening on this machine on an address that is not loopback; with
    `owned_by`, only those of that process and its descendants."""
    inodes = _socket_inodes(_descendants(owned_by)) if owned_by is not None else None
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        path = Path(table)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            if inodes is not None and fields[9] not in inodes:
                continue
            address_hex, port_hex = local.split(":")
            address = _address(address_hex, width)
            if not _loopback(address):
                found.add((address, int(port_hex, 16)))
    return frozenset(found)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, frontier = {root}, [root]
    while frontier:
        frontier = [child for pid in frontier for child in children.get(pid, ())]
        found.update(frontier)
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    return inodes


def _address(hex_text: str, width: int) -> str:
    raw = bytes.fromhex(hex_text)
    # /proc writes each 32-bit word in the host's (little-endian) order.
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    data = b"".join(words)
    if width == 8:
        return ".".join(str(b) for b in data)
    if data[:12] == b"\x00" * 10 + b"\xff\xff":
        return "::ffff:" + ".".join(str(b) for b in data[12:])
    return ":".join(data[i : i + 2].hex() for i in range(0, 16, 2))


def _loopback(address: str) -> bool:
    return (
        address.startswith("127.")
        or address.startswith("::ffff:127.")
        or address == "0000:0000:0000:0000:0000:0000:0000:0001"
    )
