"""What becomes of syslog lines, line by line and through the listeners' bulk read.

Shared by the hypothesis tests and the header fuzzer, which hold the fast paths
to the careful way's answers.
"""

from __future__ import annotations

from collections import Counter

from tophosts.formats import FormatError
from tophosts.syslog.bulk import Bulk
from tophosts.syslog.lines import LineError, Reader, settle

Outcome = tuple[int, bytes] | str
"""``(second, host)`` of a line read, or the reason it was not."""


def careful(reader: Reader, line: bytes) -> Outcome:
    """What the careful way answers for one line."""
    try:
        return reader.careful(line)
    except LineError as exc:
        return exc.reason


def line_by_line(name: str, lines: list[bytes]) -> Counter[Outcome]:
    reader = Reader(name)
    return Counter(careful(reader, line) for line in lines)


def through_bulk(
    name: str, lines: list[bytes], bulk: Bulk | None = None
) -> tuple[Counter[Outcome], int]:
    """The outcomes of ``lines`` the way a listener gets them: the bulk read, its checks
    at flush (``settle``), and every other line line by line (``Reader.read``); and
    how many lines the bulk read took."""
    reader = Reader(name)
    reads, others = bulk.read(lines) if bulk is not None else Bulk(name).read(lines)
    outcomes: Counter[Outcome] = Counter()
    fast = 0
    for seconds, hosts in reads:
        each = [seconds] * len(hosts) if isinstance(seconds, bytes) else seconds
        assert len(each) == len(hosts), (lines, reads)
        fast += len(hosts)
        for raw, host in zip(each, hosts, strict=True):
            try:
                outcomes[settle(raw, host)] += 1
            except FormatError as exc:
                outcomes[exc.reason] += 1
    assert fast + len(others) == len(lines), (lines, reads, others)
    for line in others:
        try:
            outcomes[reader.read(line)] += 1
        except LineError as exc:
            outcomes[exc.reason] += 1
    return outcomes, fast


def assert_as_careful(name: str, lines: list[bytes], bulk: Bulk | None = None) -> int:
    """Assert that the bulk read (``bulk``, or a new one) counts ``lines`` as the
    careful way does; return how many it took."""
    outcomes, fast = through_bulk(name, lines, bulk)
    assert outcomes == line_by_line(name, lines), (name, lines, outcomes)
    return fast
