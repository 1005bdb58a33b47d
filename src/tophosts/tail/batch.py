"""The batcher: log lines aggregated per ``(second, host)`` into one ``POST /counters``.

This is the hot loop. Each line goes through its format's parser (bytes in,
``(second, host_bytes)`` out) and one dict update keyed by that pair; the host
is decoded and checked once per distinct host (a bounded cache), never per
line. A batch is the lines of one byte range ``[start, end)`` of one file, and
holds at most ``max_events`` distinct pairs: the line that would add one more
ends it, and starts the next batch.

Each pair becomes one event ``{"timestamp": second, host: count}``, in the
order the pairs first appear in the range, so the same range always gives the
same body, byte for byte: a restart that rebuilds a pending batch from its
range sends exactly what was sent before. One host per event means a refusal
(400, which names the event's index) names one ``(second, host)``: the lines
refused are exactly those of that pair.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import msgspec

from tophosts.events import TIMESTAMP, EventError, check_host
from tophosts.formats import FormatError, Parser
from tophosts.tail.reader import Chunk, read_lines

MAX_EVENTS = 10_000
_NAMES_LIMIT = 100_000

Pair = tuple[int, bytes]
OnBad = Callable[[bytes, str], None]
"""Called with each line that is not shipped, and why."""


@dataclasses.dataclass(eq=False)
class Batch:
    start: int
    """Offset of its first line in the file."""
    opened: float
    """When its first line was read (a batch is sent ``--interval`` after that)."""
    end: int = -1
    counts: dict[Pair, int] = dataclasses.field(default_factory=dict)
    skip: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    """Pairs the server refused; left out of the body (kept in the state, for the key)."""

    def __post_init__(self) -> None:
        if self.end < 0:
            self.end = self.start

    @property
    def lines(self) -> int:
        """Lines to be counted (those left out by ``skip`` excluded)."""
        skipped = self._skipped()
        return sum(n for pair, n in self.counts.items() if pair not in skipped)

    def _skipped(self) -> set[Pair]:
        return {(second, host.encode()) for second, host in self.skip}

    def pairs(self) -> list[Pair]:
        """The pairs sent, in body order: ``pairs()[i]`` is the event a 400's index names."""
        skipped = self._skipped()
        return [pair for pair in self.counts if pair not in skipped]


class Aggregator:
    """Parses lines into batches with one format's parser; one per shipper."""

    def __init__(self, parser: Parser, on_bad: OnBad, max_events: int = MAX_EVENTS) -> None:
        self.parser = parser
        self.on_bad = on_bad
        self.max_events = max_events
        # host bytes -> the host as a JSON string (b'"a.com"'), or the reason it is refused
        self._names: dict[bytes, bytes | str] = {}

    def add(self, batch: Batch, chunk: Chunk) -> bool:
        """Add the lines of ``chunk`` (which starts at ``batch.end``); ``False`` if the batch
        filled up first, in which case ``batch.end`` is where the next batch starts."""
        assert chunk.start == batch.end, (chunk.start, batch.end)
        if chunk.overlong:
            self.on_bad(b"", "a line longer than 1 MiB (skipped up to its newline)")
        counts = batch.counts
        get = counts.get
        parse = self.parser
        for line in chunk.lines:
            try:
                pair = parse(line)
            except FormatError as exc:
                self.on_bad(line, exc.detail)
                continue
            n = get(pair)
            if n is not None:
                counts[pair] = n + 1
                continue
            # A new pair: check its host (once per distinct host), and the cap.
            name = self._name(pair[1])
            if isinstance(name, str):
                self.on_bad(line, name)
                continue
            if len(counts) >= self.max_events:
                batch.end = _offset_of(chunk, line)
                return False
            counts[pair] = 1
        batch.end = chunk.end
        return True

    def _name(self, host: bytes) -> bytes | str:
        """``host`` as a JSON string, or why it cannot be sent."""
        name = self._names.get(host)
        if name is None:
            name = _check(host)
            if len(self._names) >= _NAMES_LIMIT:
                self._names.clear()
            self._names[host] = name
        return name

    def _json(self, host: bytes) -> bytes:
        name = self._name(host)
        assert isinstance(name, bytes), name  # only checked hosts enter a batch
        return name

    def body(self, batch: Batch) -> bytes:
        """The ``POST /counters`` body of ``batch``: one event per pair, in first-seen order."""
        skipped = batch._skipped()
        parts = [
            b'{"timestamp":%d,%b:%d}' % (second, self._json(host), n)
            for (second, host), n in batch.counts.items()
            if (second, host) not in skipped
        ]
        return b"[" + b",".join(parts) + b"]"

    def rebuild(self, fd: int, start: int, end: int, skip: list[tuple[int, str]]) -> Batch:
        """The batch of ``[start, end)``, exactly as it was built the first time."""
        batch = Batch(start, opened=0.0, skip=list(skip))
        cap, self.max_events = self.max_events, 2**62  # whatever --max-batch was then
        try:
            while batch.end < end:
                chunk = read_lines(fd, batch.end, limit=end)
                if chunk is None:
                    raise OSError(f"the range {start}-{end} can no longer be read whole")
                self.add(batch, chunk)
        finally:
            self.max_events = cap
        return batch

    def find_line(self, fd: int, batch: Batch, pairs: Iterable[Pair]) -> bytes:
        """The first line of ``batch`` that gives one of ``pairs`` (for the log of a refusal)."""
        wanted = set(pairs)
        position = batch.start
        while position < batch.end:
            chunk = read_lines(fd, position, limit=batch.end)
            if chunk is None:
                break
            for line in chunk.lines:
                try:
                    if self.parser(line) in wanted:
                        return line
                except FormatError:
                    continue
            position = chunk.end
        return b""


def _offset_of(chunk: Chunk, line: bytes) -> int:
    """The offset of ``line`` in ``chunk``, found by identity: it is that very object.

    Only a line that parsed is looked for, and a parsed line has at least three
    bytes, so it is never one of the interpreter's shared empty or one-byte objects.
    Walking the chunk here costs nothing per line: it happens once per full batch.
    """
    offset = chunk.start
    for candidate in chunk.lines:
        if candidate is line:
            return offset
        offset += len(candidate) + 1
    raise AssertionError("line not in chunk")  # pragma: no cover


def _check(host: bytes) -> bytes | str:
    try:
        name = host.decode("utf-8")
    except UnicodeDecodeError:
        return "the host is not valid UTF-8"
    try:
        check_host(name)
    except EventError as exc:
        return exc.message
    if name == TIMESTAMP:
        return 'the host "timestamp" cannot be sent: it is the name of the event\'s time field'
    return msgspec.json.encode(name)


def read_into(
    aggregator: Aggregator, fd: int, batch: Batch, budget: int, limit: int | None = None
) -> tuple[bool, bool]:
    """Read complete lines at ``batch.end`` into ``batch``, at most ``budget`` bytes.

    Returns ``(full, more)``: whether the batch filled up, and whether there may
    be more to read right away (the budget ran out before the end of the file).
    """
    read = 0
    while read < budget:
        chunk = read_lines(fd, batch.end, limit=limit)
        if chunk is None:
            return False, False
        read += chunk.end - chunk.start
        if not aggregator.add(batch, chunk):
            return True, True
    return False, True
