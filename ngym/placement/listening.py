"""A local replica's listening socket, which ng_run keeps across the replica's restarts, and how a dead replica
refuses connections so that its callers go to another replica at once.

While its process is dead, a replica whose instance has another replica serving stops listening: a connection
is refused at once (and the connections queued on it, which no process will take, are reset), so a router
(ngym.upstream.routing) moves the session to a live replica on its first try, and takes the replica back once
its /health answers again. Nothing is added to any request: a router learns of the death by the refusal itself.
The restarted process listens again on the same socket when it starts serving (asyncio's create_server listens
on the socket it is given), so connections are refused until the new process can take them. A replica with no
live sibling keeps listening: its callers' connections wait for the restart, there being nowhere else to go.

The port stays ng_run's while the socket does not listen (Linux keeps an explicitly bound port through
`shutdown`), so the URL never changes.
"""

from __future__ import annotations

import contextlib
import socket

from ngym.http.app import bind_socket
from ngym.placement.base import DOWN, UP

LISTEN_BACKLOG = 4096  # as ngym.http.app.bind_socket


def bind_kept(host: str, port: int) -> socket.socket:
    """`bind_socket`, with a free port (0) bound by its number: Linux releases a port the kernel chose when its
    socket stops listening, and keeps one that was asked for. The free port is held by a first socket while the
    second binds it (SO_REUSEADDR, neither listening yet), so no other process can take it in between."""
    if port:
        return bind_socket(host, port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((host, 0))
        return bind_socket(host, holder.getsockname()[1])


def listening(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


def refuse(sock: socket.socket) -> None:
    """Stop listening on `sock` (its port stays bound): new connections are refused, queued ones reset. Only
    for a socket no process serves on. Where the system cannot, connections keep waiting, as before."""
    if listening(sock):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RD)


def listen(sock: socket.socket) -> None:
    """Listen on `sock` again, if it does not."""
    if not listening(sock):
        with contextlib.suppress(OSError):
            sock.listen(LISTEN_BACKLOG)


def steer(replicas: list[tuple[str, socket.socket]]) -> None:
    """The sockets of one instance's replicas, by (state, socket): a dead one refuses connections while another
    is up (its callers go there at once); with none up, every one listens, its connections waiting for it."""
    serving = any(state == UP for state, _ in replicas)
    for state, sock in replicas:
        if state == DOWN and serving:
            refuse(sock)
        elif state != UP and not serving:
            listen(sock)
