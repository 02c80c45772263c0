"""The upstream client: a server that silently drops connection attempts counts as unreachable, so its session
moves at once (aiohttp's connect timeout used to read as "no answer within the request timeout")."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest

from ngym.http.client import NO_RETRY, HttpClient, Timeouts, UpstreamError
from ngym.upstream.client import UpstreamClient
from ngym.upstream.pool import Session
from testkit.standin.script import StandinScript
from testkit.standin.server import StandinServer


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A loopback address whose accept queue is full: new connection attempts get no answer at all."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for sock in [*fillers, server]:
            sock.close()


async def test_a_connect_timeout_is_unreachable_not_a_slow_answer(blackhole: str) -> None:
    async with HttpClient(timeouts=Timeouts(total=60, connect=0.3)) as http:
        with pytest.raises(UpstreamError) as info:
            await http.get(blackhole + "/models", retry=NO_RETRY)
    assert info.value.kind == UpstreamError.CONNECT and info.value.server_unreachable
    assert "0.3 s" in info.value.reason and "60" not in info.value.reason


async def test_a_session_on_a_server_that_drops_packets_moves_to_the_next(blackhole: str) -> None:
    async with StandinServer(StandinScript()) as vllm, HttpClient(timeouts=Timeouts(total=60, connect=0.3)) as http:
        client = UpstreamClient([blackhole, vllm.base_url], http, {})
        session = Session("s", pinned=0)
        answer = await client.post(session, "/v1/models", b"{}")
    assert answer.upstream.index == 1 and session.served_by == 1
    assert not client.pool.upstreams[0].healthy
