"""Full-text search: the rows whose line contains the text, found by scanning the raw bytes of the file.

The text is looked for as JSON writes it (quotes and newlines escaped; non-ASCII raw or as \\u escapes), with
ASCII letters in any case and other letters in their usual cases, so a search reads the file once with
`bytes.find` (C speed) and parses no row.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_right

import orjson

from ngym.viewer.index import RowIndex

SCAN_BYTES = 16 << 20
MAX_QUERY_CHARS = 500


def needles(text: str) -> list[bytes]:
    """The byte strings to look for in a line lowered for ASCII (bytes.lower leaves other bytes alone)."""
    found: list[bytes] = []
    for variant in dict.fromkeys((text, text.lower(), text.upper(), text.capitalize())):
        for form in (orjson.dumps(variant)[1:-1], json.dumps(variant)[1:-1].encode()):
            lowered = form.lower()
            if lowered not in found:
                found.append(lowered)
    return found


def search(index: RowIndex, text: str) -> array[int]:
    """Ids of the indexed rows whose line contains `text`, in file order."""
    hits: array[int] = array("q")
    if not text or index.rows == 0:
        return hits
    wanted = needles(text)
    offsets, lengths = index.offsets, index.lengths
    end = offsets[-1] + lengths[-1]
    with index.path.open("rb") as handle:
        start = offsets[0]
        while start < end:
            handle.seek(start)
            block = handle.read(min(SCAN_BYTES, end - start))
            if not block:
                break
            last_newline = block.rfind(b"\n")
            if last_newline >= 0 and start + len(block) < end:
                block = block[: last_newline + 1]  # rows do not straddle blocks (unless one is longer than a block)
            hits.extend(sorted(_rows_in_block(block.lower(), start, wanted, offsets, lengths)))
            start += len(block)
    return hits


def _rows_in_block(block: bytes, start: int, wanted: list[bytes], offsets: array[int], lengths: array[int]) -> set[int]:
    rows: set[int] = set()
    for needle in wanted:
        position = block.find(needle)
        while position >= 0:
            row = bisect_right(offsets, start + position) - 1
            row_end = offsets[row] + lengths[row] - start if row >= 0 else 0
            if row >= 0 and position + len(needle) <= row_end:
                rows.add(row)
                position = block.find(needle, row_end)  # the rest of this row cannot add anything
            else:
                position = block.find(needle, position + 1)  # a line that is not a row
    return rows
