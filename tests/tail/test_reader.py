"""Complete lines from an offset: a partial last line waits for its newline."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tophosts.tail.reader import CHUNK, last_line_end, read_lines


@pytest.fixture
def log(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "access.log"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    yield path, fd
    os.close(fd)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def test_only_complete_lines_are_read(log: tuple[Path, int]) -> None:
    path, fd = log
    assert read_lines(fd, 0) is None
    append(path, b"one\ntwo\nthr")
    chunk = read_lines(fd, 0)
    assert chunk is not None
    assert (chunk.lines, chunk.start, chunk.end) == ([b"one", b"two"], 0, 8)
    assert read_lines(fd, chunk.end) is None  # "thr" waits
    append(path, b"ee\n")
    chunk = read_lines(fd, 8)
    assert chunk is not None
    assert (chunk.lines, chunk.end) == ([b"three"], 14)


def test_a_read_is_at_most_one_chunk(log: tuple[Path, int]) -> None:
    path, fd = log
    append(path, b"x" * 99 + b"\n" * 1 + (b"y" * 99 + b"\n") * 2)
    chunk = read_lines(fd, 0, size=150)
    assert chunk is not None
    assert (chunk.lines, chunk.end) == ([b"x" * 99], 100)


def test_a_limit_stops_the_read(log: tuple[Path, int]) -> None:
    path, fd = log
    append(path, b"a\nb\nc\n")
    chunk = read_lines(fd, 0, limit=4)
    assert chunk is not None
    assert (chunk.lines, chunk.end) == ([b"a", b"b"], 4)
    assert read_lines(fd, 4, limit=4) is None


def test_a_line_longer_than_a_chunk_is_skipped_whole(log: tuple[Path, int]) -> None:
    path, fd = log
    append(path, b"z" * (CHUNK + 10))
    assert read_lines(fd, 0) is None  # not ended yet: no decision
    append(path, b"\nnext\n")
    chunk = read_lines(fd, 0)
    assert chunk is not None
    assert (chunk.lines, chunk.end, chunk.overlong) == ([], CHUNK + 11, 1)
    after = read_lines(fd, chunk.end)
    assert after is not None
    assert after.lines == [b"next"]


def test_from_the_end_starts_after_the_last_newline(log: tuple[Path, int]) -> None:
    path, fd = log
    assert last_line_end(fd, 0) == 0
    append(path, b"a\nb\npartial")
    assert last_line_end(fd, os.fstat(fd).st_size) == 4
    append(path, b"\n" + b"q" * (CHUNK * 2))
    assert last_line_end(fd, os.fstat(fd).st_size) == 12
