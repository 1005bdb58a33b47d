"""The batcher: per (second, host) aggregation, the cap, bad lines, and a body that rebuilds."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tophosts import formats
from tophosts.tail.batch import Aggregator, Batch, read_into
from tophosts.tail.reader import read_lines


class Log:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(b"")
        self.fd = os.open(path, os.O_RDONLY)
        self.bad: list[tuple[bytes, str]] = []

    def write(self, *lines: str) -> None:
        with self.path.open("ab") as out:
            out.write("".join(line + "\n" for line in lines).encode())

    def aggregator(self, max_events: int = 10_000) -> Aggregator:
        return Aggregator(formats.text, lambda line, why: self.bad.append((line, why)), max_events)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Log]:
    log = Log(tmp_path / "access.log")
    yield log
    os.close(log.fd)


def events(body: bytes) -> list[dict[str, int]]:
    return json.loads(body)  # type: ignore[no-any-return]


def test_lines_aggregate_per_second_and_host_in_first_seen_order(log: Log) -> None:
    log.write("100.1 b.com", "100.9 a.com", "100.5 b.com", "101.0 b.com", "100.0 a.com")
    agg = log.aggregator()
    batch = Batch(0, opened=0.0)
    assert read_into(agg, log.fd, batch, 1 << 20) == (False, False)
    assert batch.end == os.path.getsize(log.path)
    assert events(agg.body(batch)) == [
        {"timestamp": 100, "b.com": 2},
        {"timestamp": 100, "a.com": 2},
        {"timestamp": 101, "b.com": 1},
    ]
    assert batch.lines == 5


def test_bad_lines_and_bad_hosts_are_reported_and_left_out(log: Log) -> None:
    long_host = "h" * 256
    log.write("100 a.com", "garbage", f"100 {long_host}", "100 timestamp", "100 a.com")
    with log.path.open("ab") as out:
        out.write(b"100 \xff\xfe.com\n")
    agg = log.aggregator()
    batch = Batch(0, opened=0.0)
    read_into(agg, log.fd, batch, 1 << 20)
    assert events(agg.body(batch)) == [{"timestamp": 100, "a.com": 2}]
    assert [line for line, _ in log.bad] == [
        b"garbage",
        f"100 {long_host}".encode(),
        b"100 timestamp",
        b"100 \xff\xfe.com",
    ]
    reasons = [why for _, why in log.bad]
    assert "no host" in reasons[0]
    assert "256 bytes" in reasons[1]
    assert "time field" in reasons[2]
    assert "UTF-8" in reasons[3]
    # The batch still covers every byte: the bad lines are behind it, never read again.
    assert batch.end == os.path.getsize(log.path)


def test_a_partial_last_line_is_left_for_the_next_batch(log: Log) -> None:
    log.write("100 a.com")
    with log.path.open("ab") as out:
        out.write(b"100 b.c")
    agg = log.aggregator()
    batch = Batch(0, opened=0.0)
    read_into(agg, log.fd, batch, 1 << 20)
    assert batch.end == 10
    assert events(agg.body(batch)) == [{"timestamp": 100, "a.com": 1}]


def test_a_full_batch_ends_just_before_the_line_that_would_pass_the_cap(log: Log) -> None:
    lines = [f"{100 + i} a.com" for i in range(7)]  # 10 bytes each
    log.write(*lines)
    agg = log.aggregator(max_events=3)
    batches: list[Batch] = []
    start = 0
    size = os.path.getsize(log.path)
    while start < size:
        batch = Batch(start, opened=0.0)
        read_into(agg, log.fd, batch, 1 << 20)
        batches.append(batch)
        start = batch.end
    assert [len(b.counts) for b in batches] == [3, 3, 1]
    assert [b.start for b in batches] == [0, 30, 60]
    assert [b.end for b in batches] == [30, 60, 70]
    assert [e["timestamp"] for b in batches for e in events(agg.body(b))] == list(range(100, 107))


def test_repeats_of_known_pairs_do_not_end_a_full_batch(log: Log) -> None:
    log.write("100 a.com", "100 b.com", "100 a.com", "100 b.com", "100 c.com")
    agg = log.aggregator(max_events=2)
    batch = Batch(0, opened=0.0)
    assert read_into(agg, log.fd, batch, 1 << 20)[0] is True
    assert events(agg.body(batch)) == [
        {"timestamp": 100, "a.com": 2},
        {"timestamp": 100, "b.com": 2},
    ]
    assert batch.end == 40


def test_a_range_rebuilds_to_the_same_body_byte_for_byte(log: Log) -> None:
    log.write(*(f"{100 + i % 5}.{i} h{i % 7}.com" for i in range(500)), "junk")
    agg = log.aggregator()
    batch = Batch(0, opened=0.0)
    read_into(agg, log.fd, batch, 1 << 20)
    again = log.aggregator(max_events=1).rebuild(log.fd, batch.start, batch.end, [])
    assert agg.body(again) == agg.body(batch)
    assert again.end == batch.end


def test_skipped_pairs_leave_the_body_and_the_count(log: Log) -> None:
    log.write("100 a.com", "100 b.com", "100 b.com", "101 a.com")
    agg = log.aggregator()
    batch = Batch(0, opened=0.0)
    read_into(agg, log.fd, batch, 1 << 20)
    batch.skip.append((100, "b.com"))
    assert events(agg.body(batch)) == [
        {"timestamp": 100, "a.com": 1},
        {"timestamp": 101, "a.com": 1},
    ]
    assert batch.lines == 2
    assert batch.pairs() == [(100, b"a.com"), (101, b"a.com")]
    rebuilt = agg.rebuild(log.fd, 0, batch.end, batch.skip)
    assert agg.body(rebuilt) == agg.body(batch)
    assert agg.find_line(log.fd, batch, [(100, b"b.com")]) == b"100 b.com"


def test_host_names_are_json_escaped(log: Log) -> None:
    log.write('100 we"ird\\host', "100 ünï.example")
    agg = log.aggregator()
    batch = Batch(0, opened=0.0)
    read_into(agg, log.fd, batch, 1 << 20)
    assert events(agg.body(batch)) == [
        {"timestamp": 100, 'we"ird\\host': 1},
        {"timestamp": 100, "ünï.example": 1},
    ]


def test_a_read_budget_returns_to_the_caller(log: Log) -> None:
    log.write(*(f"100 a{i % 9000}.com" for i in range(100_000)))  # 1.4 MB: two chunks
    agg = log.aggregator()
    batch = Batch(0, opened=0.0)
    full, more = read_into(agg, log.fd, batch, budget=1)
    assert (full, more) == (False, True)
    assert 0 < batch.end < os.path.getsize(log.path)
    chunk = read_lines(log.fd, 0)
    assert chunk is not None
    assert batch.end == chunk.end  # one chunk, then back to the caller
