"""Complete lines from an offset of a log file.

A web server appends whole lines, but a read can land between a line's first
bytes and its newline. Only lines that end in a newline are returned; the bytes
after the last newline wait for the next read, which starts at the end of the
last complete line. Each read is one ``pread`` of at most :data:`CHUNK` bytes, so
memory stays bounded however far behind the reader is. A "line" longer than a
whole chunk is no access-log line: it is skipped up to its newline and counted
as one bad line.
"""

from __future__ import annotations

import dataclasses
import os

CHUNK = 1 << 20
"""Bytes read at once (1 MiB): about 10,000 access-log lines."""


@dataclasses.dataclass(frozen=True)
class Chunk:
    lines: list[bytes]
    """The complete lines of ``[start, end)``, without their newlines."""
    start: int
    end: int
    """Just after the last newline read: where the next read starts."""
    overlong: int = 0
    """Lines longer than :data:`CHUNK` that were skipped (0 or 1)."""


def read_lines(fd: int, offset: int, size: int = CHUNK, limit: int | None = None) -> Chunk | None:
    """The complete lines from ``offset`` in at most ``size`` bytes (and before ``limit``).

    ``None`` when there is no complete line yet: the file ends at ``offset``, or
    in the middle of a line.
    """
    if limit is not None:
        size = min(size, limit - offset)
        if size <= 0:
            return None
    data = os.pread(fd, size, offset)
    if not data:
        return None
    lines = data.split(b"\n")
    tail = lines.pop()
    if lines:
        return Chunk(lines, offset, offset + len(data) - len(tail))
    if len(data) < size or (limit is not None and offset + len(data) >= limit):
        return None  # a partial last line: it waits for its newline
    end = _end_of_line(fd, offset + len(data), limit)
    if end is None:
        return None
    return Chunk([], offset, end, overlong=1)


def _end_of_line(fd: int, offset: int, limit: int | None) -> int | None:
    """The offset just after the next newline at or after ``offset``, ``None`` if none yet."""
    while limit is None or offset < limit:
        data = os.pread(fd, CHUNK if limit is None else min(CHUNK, limit - offset), offset)
        if not data:
            return None
        newline = data.find(b"\n")
        if newline >= 0:
            return offset + newline + 1
        offset += len(data)
    return None


def last_line_end(fd: int, size: int) -> int:
    """The offset just after the last newline before ``size`` (0 if none): where reading
    "from the end" starts, so that a line being written is read whole."""
    end = size
    while end > 0:
        start = max(0, end - CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
