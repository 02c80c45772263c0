"""ng_run reads its servers' output of any line length (a line over 64 KiB used to kill the reader, and the child
then hung on its next write)."""

from __future__ import annotations

import asyncio
import sys

from ngym.servers.supervisor import MAX_PENDING_BYTES, READ_CHUNK_BYTES, pump_lines

CHILD = """
import sys
sys.stdout.write("first\\n" + "x" * 200_000 + "\\n" + "y" * (3 * 2**20 + 5) + "\\nlast")
sys.stdout.flush()
"""


async def test_lines_of_any_length_are_read_and_the_child_finishes() -> None:
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    lines: list[bytes] = []
    await asyncio.wait_for(pump_lines(child.stdout, lines.append), timeout=60)
    assert await asyncio.wait_for(child.wait(), timeout=60) == 0
    assert lines[0] == b"first" and lines[1] == b"x" * 200_000
    long_pieces = lines[2:-1]
    assert len(long_pieces) > 1, "a line over MAX_PENDING_BYTES is shown in pieces"
    assert sum(len(piece) for piece in long_pieces) == 3 * 2**20 + 5
    assert all(set(piece) == {ord("y")} for piece in long_pieces)
    assert max(len(piece) for piece in long_pieces) <= MAX_PENDING_BYTES + READ_CHUNK_BYTES
    assert lines[-1] == b"last"
