"""What the decoder harnesses check of each outcome: success or EventError, nothing else.

On success the events must be valid (hosts of 1 to 255 UTF-8 bytes without NUL,
integer counts and timestamps from 0 to 2^53 - 1) and equal to what the
standard-library reference (:mod:`tests.fuzz.reference`) reads. On EventError
the message must be a non-empty str, the index ``None`` or the position the
reference names, the NDJSON line the one it names, and the decoder's guard must
not have fired (an error with a ``__cause__`` is a bug caught by the guard).
A batch read a slice at a time (``Decoder.slices``, 1 and 40 bytes a slice: one
event a slice, or a few small ones)
must give exactly what it gives whole: the same events, or the same refusal.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable

from tests.fuzz import reference
from tophosts.events import MAX_COUNT, MAX_HOST_BYTES, Decoder, Event, EventError

MAX_HOSTS = 4
"""Small, so that the host-count limit is within a fuzzer's reach."""

DECODER = Decoder(max_hosts=MAX_HOSTS)

_LINE = re.compile(r"line (\d+): ")
_BYTE = re.compile(r"\(byte (\d+)\)")


class Mismatch(AssertionError):
    """The decoder and the reference disagree, or an outcome breaks the contract."""


def _count_ok(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT


def check_events(events: list[Event], expected: reference.Verdict) -> None:
    for timestamp, counts in events:
        if not _count_ok(timestamp):
            raise Mismatch(f"accepted timestamp {timestamp!r}")
        if not counts or len(counts) > MAX_HOSTS:
            raise Mismatch(f"accepted an event with {len(counts)} hosts")
        for host, count in counts.items():
            if type(host) is not str or host == "timestamp":
                raise Mismatch(f"accepted host {host!r}")
            if not 1 <= len(host.encode()) <= MAX_HOST_BYTES or "\x00" in host:
                raise Mismatch(f"accepted host name {host!r}")
            if not _count_ok(count):
                raise Mismatch(f"accepted count {count!r} for {host!r}")
    if expected.known and expected.events != events:
        raise Mismatch(f"decoded {events!r}; the reference reads {expected.events!r}")


def check_error(
    error: EventError, data: bytes, expected: reference.Verdict, ndjson: bool = False
) -> None:
    if error.__cause__ is not None:
        cause = "".join(traceback.format_exception(error.__cause__))
        raise Mismatch(f"the decoder's guard fired on this cause:\n{cause}") from error.__cause__
    if type(error.message) is not str or not error.message or error.args != (error.message,):
        raise Mismatch(f"bad message {error.message!r}")
    if error.status != 400:
        raise Mismatch(f"status {error.status}")
    if error.index is not None and (type(error.index) is not int or error.index < 0):
        raise Mismatch(f"bad index {error.index!r}")
    for position in _BYTE.findall(error.message):
        if not 0 <= int(position) <= len(data):
            raise Mismatch(f"{error.message!r} names a byte outside the body")
    if not expected.known:
        return
    if expected.events is not None:
        raise Mismatch(f"refused ({error.message!r}); the reference reads {expected.events!r}")
    if error.index != expected.index:
        raise Mismatch(f"index {error.index} ({error.message!r}); the reference: {expected.index}")
    line = _LINE.match(error.message)
    if ndjson and expected.index is not None:
        if line is None or int(line[1]) != expected.line:
            raise Mismatch(f"{error.message!r} should name line {expected.line}")
    elif line is not None and (not ndjson or error.index is None):
        raise Mismatch(f"{error.message!r} names a line")


def run(
    decode: Callable[[], list[Event]],
    data: bytes,
    expected: reference.Verdict,
    ndjson: bool = False,
) -> None:
    """Decode, and check the outcome: the whole of each decoder harness."""
    try:
        events = decode()
    except EventError as error:
        check_error(error, data, expected, ndjson)
        return
    check_events(events, expected)


def check_slices(data: bytes, ndjson: bool = False) -> None:
    """``Decoder.slices`` of 1 and of 40 bytes must agree with ``Decoder.many``."""

    def outcome(decode: Callable[[], list[Event]]) -> object:
        try:
            return decode()
        except EventError as error:
            return (error.message, error.index, error.status)

    def sliced(size: int) -> Callable[[], list[Event]]:
        return lambda: [event for part in DECODER.slices(data, ndjson, size) for event in part]

    whole = outcome(lambda: DECODER.many(data, ndjson))
    for size in (1, 40):
        got = outcome(sliced(size))
        if got != whole:
            raise Mismatch(f"in slices of {size}: {got!r}; whole: {whole!r}")
