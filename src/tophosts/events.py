"""Decode and validate request bodies into events.

An event is ``{"timestamp": <unix seconds>, "<host>": <requests>, ...}``. Decoding
is all-or-nothing: a body either yields a list of fully valid events or raises
:class:`EventError` naming the first offending event, key or value.

The fast path is a typed msgspec decode. Only when that fails do we walk the
generic JSON again to say precisely what is wrong, so error texts cost nothing
on valid input.

Whatever happens inside, :meth:`Decoder.one` and :meth:`Decoder.many` raise
nothing but :class:`EventError`: each is one guarded boundary. An exception
that escapes a check or an explanation (a bug) becomes a generic 400 whose
``__cause__`` is that exception, logged on ``tophosts.events``; the fuzzers in
``tests/fuzz/`` treat such a cause as a crash.

NDJSON is read exactly as msgspec's ``decode_lines`` reads it: one JSON value
after another, separated by JSON whitespace (space, tab, CR, LF) or by nothing.
An event may span lines, and a line may hold several events. The duplicate-key
and NUL check and the explanation of a refusal split the body the same way
(:func:`_ndjson_events`). "line N" in a message is the physical line, 1-based,
on which the offending event begins: lines end at LF, as JSON Lines defines
them (a CR before the LF is whitespace, so CRLF ends one line), and blank lines
count.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import logging
import re
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from functools import partial
from types import FrameType
from typing import Annotated, Any, TypeVar

import msgspec

from tophosts.windows import label

MAX_COUNT = 2**53 - 1
"""Largest count (and total) we accept: beyond it doubles, and so Redis scores, lose integers."""

MAX_HOST_BYTES = 255
TIMESTAMP = "timestamp"

AT_ONCE_BYTES = 256 * 1024
"""A batch body up to this size is decoded in one step of the event loop (about 2 ms
on this project's machine: a decode takes about 7 ns a byte); a larger one a slice
at a time (:meth:`Decoder.slices`), so that no body holds up every other request
while it is read. A whole 8 MiB body took 120 ms."""

SLICE_BYTES = 32 * 1024
"""The bytes of events decoded in one step, past ``AT_ONCE_BYTES``: about 0.25 ms (at
about 150 KB a slice, other requests waited twice as long: BENCHMARKS.md, "Large
batches"). An event is never split: a slice holds one event at least."""


def spans(totals: Sequence[int], budget: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` index ranges of consecutive items whose weights sum to at most
    ``budget``, each with one item at least: the slices of a batch. ``totals``: the
    running totals of the weights (``itertools.accumulate``)."""
    start = 0
    while start < len(totals):
        reached = totals[start - 1] if start else 0
        end = bisect.bisect_right(totals, reached + budget, start + 1)
        yield start, end
        start = end


_T = TypeVar("_T")

TOTALS_STEP = 16_384
"""Items whose running total :func:`running_totals` takes in one step (about 1 ms)."""


def running_totals(
    items: Sequence[_T], weights: Callable[[Sequence[_T]], Iterable[int]], into: list[int]
) -> Iterator[None]:
    """Append to ``into`` the running totals of the weights of ``items`` (``weights``
    maps a run of items to theirs), ``TOTALS_STEP`` items a step, yielding after each
    step (not at all for no items)."""
    for start in range(0, len(items), TOTALS_STEP):
        run = weights(items[start : start + TOTALS_STEP])
        base = into[-1] if into else 0
        into.extend(itertools.islice(itertools.accumulate(itertools.chain((base,), run)), 1, None))
        yield


def _lengths(items: Sequence[msgspec.Raw]) -> Iterable[int]:
    return map(len, items)


Event = tuple[int, dict[str, int]]
"""``(timestamp, {host: count})``: the validated form the stores take."""

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
_Host = Annotated[str, msgspec.Meta(min_length=1)]
_OBJECT = dict[_Host, Count]

_log = logging.getLogger("tophosts.events")


class EventError(ValueError):
    """A body, event or field that cannot be accepted.

    ``index`` is the 0-based position of the offending event in a batch, or
    ``None`` when the error is about the body as a whole or a single event.
    ``status`` is the HTTP status it maps to.
    """

    def __init__(self, message: str, index: int | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.status = status


class Decoder:
    """Decodes ``POST /counter`` and ``POST /counters`` bodies.

    One instance per server: it holds the typed msgspec decoders for the
    configured ``max_hosts``.
    """

    def __init__(self, max_hosts: int = 10_000) -> None:
        self.max_hosts = max_hosts
        self._one = msgspec.json.Decoder(_OBJECT)
        self._many = msgspec.json.Decoder(list[_OBJECT])

    def one(self, body: bytes) -> Event:
        """Decode a single event (``POST /counter``)."""
        # One boundary: in Python 3.11 a try costs nothing until something raises.
        try:
            obj = self._one.decode(body)
            # A NUL escape needs a backslash: look for one byte first (memchr).
            if body.count(b",") != len(obj) - 1 or (b"\\" in body and _NUL in body):
                problem = _key_error(body, batch=False)
                if problem is not None:
                    raise problem
            timestamp = obj.pop(TIMESTAMP, None)
            # A body of at most MAX_HOST_BYTES cannot hold a longer host name: JSON
            # never spells a name in fewer bytes than its UTF-8.
            if (
                timestamp is None
                or not obj
                or len(obj) > self.max_hosts
                or len(body) > MAX_HOST_BYTES
            ):
                self._check(timestamp, obj, None)
            return timestamp, obj  # type: ignore[return-value]  # _check ruled out None
        except EventError:
            raise
        except (msgspec.DecodeError, RecursionError) as exc:
            refusal = _explained(exc, _explain_one, body)
            raise refusal from refusal.__cause__  # None, unless the explanation failed
        except Exception as exc:
            raise _unexplained(exc) from exc

    def many(self, body: bytes, ndjson: bool = False) -> list[Event]:
        """Decode a batch (``POST /counters``): a JSON array, or NDJSON lines."""
        try:
            objs = self._many_ndjson(body) if ndjson else self._many.decode(body)
            # In a flat event every comma separates two members, so a body with
            # more commas than that holds a duplicate key (or a host name with a
            # comma in it): only then is the exact, slower check needed.
            members = sum(map(len, objs))
            separators = len(objs) - 1 if not ndjson else 0
            problem = None
            if body.count(b",") != members - len(objs) + separators or _NUL in body:
                problem = _key_error(body, batch=True, ndjson=ndjson)
            stamps = [obj.pop(TIMESTAMP, None) for obj in objs]
            # Check the whole batch at C speed; walk it event by event only to name
            # the first offending one (an event before a key problem's comes first).
            if objs and (
                None in stamps
                or not all(objs)
                or max(map(len, objs)) > self.max_hosts
                or max(map(len, itertools.chain.from_iterable(objs))) * 4 > MAX_HOST_BYTES
            ):
                last = len(objs) if problem is None else problem.index
                try:
                    for i, (timestamp, obj) in enumerate(zip(stamps[:last], objs, strict=False)):
                        self._check(timestamp, obj, i)
                except EventError as error:
                    raise _on_its_line(body, error) if ndjson else error from None
            if problem is not None:
                raise problem
            return list(zip(stamps, objs, strict=True))  # type: ignore[arg-type]  # no None left
        except EventError:
            raise
        except (msgspec.DecodeError, RecursionError) as exc:
            explain = self._explain_ndjson if ndjson else self._explain_array
            refusal = _explained(exc, explain, body)
            raise refusal from refusal.__cause__  # None, unless the explanation failed
        except Exception as exc:
            raise _unexplained(exc) from exc

    def slices(
        self, body: bytes, ndjson: bool = False, size: int | None = None
    ) -> Iterator[list[Event]]:
        """:meth:`many`, about ``size`` bytes of events at a time: the caller may serve
        others between two slices, and joins them.

        The body's values are found first at C speed (msgspec's ``Raw``, a
        twentieth of a decode), then each slice is decoded by :meth:`many` alone.
        A slice holds whole events, each as valid alone as in the body, so the
        slices succeed exactly when the body does, and the first refused holds
        the body's first bad event. Its refusal is the body's, placed in the
        body (:meth:`_in_body`): the same error, index and line as :meth:`many`
        gives the whole body. The events yielded before a refusal are to be
        dropped. Raises nothing but :class:`EventError`. ``size``:
        ``SLICE_BYTES``.
        """
        if size is None:
            size = SLICE_BYTES
        try:
            raws = _RAW.decode_lines(body) if ndjson else _RAW_LIST.decode(body)
        except msgspec.DecodeError as exc:
            if len(body) > size:
                yield from self._refused(body, ndjson, exc, size)
            raws = []  # a refusal: many() words it
        except RecursionError:
            raws = []
        if len(raws) < 2 or len(body) <= size:
            yield self.many(body, ndjson)
            return
        totals: list[int] = []
        for _ in running_totals(raws, _lengths, totals):
            yield []  # the scan, then each run of the totals, a step of its own
        glue = b"\n" if ndjson else b","
        pos = 0  # NDJSON: where the slice's values start in the body (its whitespace first)
        for first, end in spans(totals, size):
            part = raws[first:end]
            joined = glue.join(part)
            try:
                events = self.many(joined if ndjson else b"[" + joined + b"]", ndjson)
            except EventError as error:
                try:
                    placed = self._in_body(body, error, part, first, pos, ndjson)
                except Exception as exc:
                    raise _unexplained(exc) from exc
                if placed is not None:
                    raise placed from placed.__cause__
                if not ndjson and not _is_utf8(body):
                    # As many() would explain it after its decode, a slice at a time.
                    reason = yield from _raws_explained(body, raws, size)
                    if reason is not None:
                        raise EventError(reason) from None
                    self._refuse_malformed(body, ndjson)
                self.many(body, ndjson)  # raises the body's own refusal
                bug = RuntimeError("a slice of a batch was refused, the batch was not")
                raise _unexplained(bug) from bug
            yield events
            if ndjson:
                pos = _after(body, pos, part, joined)

    def _refused(
        self, body: bytes, ndjson: bool, syntax: msgspec.DecodeError, size: int
    ) -> Iterator[list[Event]]:
        """:meth:`slices` of a body whose values could not be found: raises its refusal.

        NDJSON is explained as :meth:`_explain_ndjson` does, but the whole lines
        before the syntax error go through :meth:`slices` (their first bad event
        is the body's); an array part by part (:func:`_array_explained`). Either
        falls back to the whole body's explanation where it cannot place a fault.
        """
        events = cut = 0
        yield []  # each scan of the body a step of its own
        if not ndjson and not isinstance(syntax, msgspec.ValidationError):
            reason = yield from _array_explained(body, size)
            if reason is not None:
                raise EventError(reason)
        if ndjson:
            cut = _lines_cut(body, syntax)
        if cut:
            yield []
            for part in self.slices(body[:cut], True, size):
                events += len(part)
                yield part
        self._refuse_malformed(body, ndjson, events, cut)
        self.many(body, ndjson)  # raises the body's own refusal
        bug = RuntimeError("a batch whose values could not be found was not refused")
        raise _unexplained(bug) from bug

    def _refuse_malformed(self, body: bytes, ndjson: bool, events: int = 0, cut: int = 0) -> None:
        """Raise the refusal :meth:`many` gives a body whose values could not be found,
        without the typed decode it tries first: that decode of a large body fails
        where the values' scan failed, after as long as the explanation takes.
        ``events``, ``cut``: an NDJSON body's whole lines before its syntax error end
        at ``cut`` and hold ``events`` good events. Returns, for :meth:`many` to word
        it, when the explanation finds nothing."""
        try:
            with _fixed_depth():
                if cut:
                    error = self._explain_lines(body, events, _ndjson_walk(body, cut))
                elif ndjson:
                    error = self._explain_ndjson(body)
                else:
                    error = self._explain_array(body)
        except Exception:
            return
        if error is not None:
            raise error from error.__cause__

    @staticmethod
    def _in_body(
        body: bytes,
        error: EventError,
        part: list[msgspec.Raw],
        first: int,
        pos: int,
        ndjson: bool,
    ) -> EventError | None:
        """The refusal of the slice ``part`` (its events from ``first`` on, its NDJSON
        values from byte ``pos``) as the whole ``body``'s, or ``None`` to decode the
        whole body for it.

        An array's event is explained alone (its bytes), so only its index moves;
        but the whole body's UTF-8 is checked before any event, so a body that is
        not UTF-8 gets the whole body's refusal. An NDJSON event's line and byte
        positions are the body's: its line is counted again, and a position in
        a syntax or UTF-8 message moved by where the event starts.
        """
        if error.index is None:
            return None  # about the slice as a whole: not expected of one that parsed
        if not ndjson:
            return _placed(error, first + error.index) if _is_utf8(body) else None
        line = _LINE.match(error.message)
        if line is None:
            return None
        start = pos
        for raw in part[: error.index]:
            start = _end_of_space(body, start) + len(raw)
        start = _end_of_space(body, start)
        reason = error.message[line.end() :]
        if reason.startswith(_NOT_JSON):
            # In the slice, the event started after the values before it and a LF each.
            moved = start - sum(map(len, part[: error.index])) - error.index
            reason = _BYTE.sub(lambda m: f"(byte {int(m[1]) + moved})", reason)
        index = first + error.index
        placed = EventError(f"line {_line(body, start)}: {reason}", index, error.status)
        placed.__cause__ = error.__cause__
        return placed

    def _many_ndjson(self, body: bytes) -> list[dict[str, int]]:
        objs = self._one.decode_lines(body)
        if not objs:
            raise msgspec.DecodeError("no events")
        return objs

    def _check(self, timestamp: int | None, obj: dict[str, int], index: int | None) -> None:
        """Raise :class:`EventError` for the first thing wrong with a decoded event."""
        if timestamp is None:
            raise EventError(_MISSING_TIMESTAMP, index)
        if not obj:
            raise EventError(_NO_HOSTS, index)
        if len(obj) > self.max_hosts:
            raise EventError(_too_many_hosts(len(obj), self.max_hosts), index)
        # A host of at most 63 characters is at most 252 UTF-8 bytes: only
        # longer names need encoding to check the byte limit.
        if max(map(len, obj)) * 4 > MAX_HOST_BYTES:
            for host in obj:
                if len(host.encode()) > MAX_HOST_BYTES:
                    raise EventError(_host_too_long(host), index)

    # -- why a batch was refused (the slow path: only ever for a refused body) --

    def _event_error(self, raw: bytes) -> EventError | None:
        """The error ``one`` gives for one event of a batch, or ``None`` if it is fine."""
        try:
            self.one(raw)
        except EventError as error:
            return error
        return None

    def _explain_array(self, body: bytes) -> EventError | None:
        reason = _explain_json(body)
        if reason is not None:
            return EventError(reason)
        try:
            items = _RAW_LIST.decode(body)
        except msgspec.ValidationError:
            return EventError(
                f"a batch must be a JSON array of events, got {_kind(_lenient(body))}"
            )
        for i, item in enumerate(items):
            error = self._event_error(bytes(item))
            if error is not None:
                return _placed(error, i)
        return None

    def _explain_ndjson(self, body: bytes) -> EventError | None:
        try:
            _RAW.decode_lines(body)
        except (msgspec.DecodeError, RecursionError) as exc:
            # A syntax error: the whole lines before it are read at C speed.
            try:
                events, pos = self._lines_before(body, exc)
            except EventError as before:
                return before  # an event before the syntax error is the first bad one
            return self._explain_lines(body, events, _ndjson_walk(body, pos))
        return self._explain_lines(body, 0, _ndjson_events(body))

    def _explain_lines(
        self, body: bytes, events: int, values: Iterable[tuple[int, bytes]]
    ) -> EventError | None:
        """The first bad one of ``values`` (``(start, bytes)``), which follow ``events``
        good events of the NDJSON ``body``, on its line; or the lack of any event."""
        index = events - 1
        for index, (start, raw) in enumerate(values, events):
            error = self._event_error(raw)
            if error is not None:
                # one() counts bytes from the event's start; the body's are wanted.
                reason = _explain_json(raw, offset=start)
                error = error if reason is None else EventError(reason)
                return _placed(error, index, f"line {_line(body, start)}: ")
        if index < 0:
            return EventError(f"the request body has no events; {_ACCEPTED}")
        return None

    def _lines_before(self, body: bytes, syntax: Exception) -> tuple[int, int]:
        """How many events the whole lines before a syntax error hold, and where they end.

        Raises the error of the first bad event among them, if any. ``(0, 0)``
        when that prefix cannot be read alone (an event spans its last line end).
        """
        cut = _lines_cut(body, syntax)
        # The same values as at the start of the whole body: no token spans a LF.
        return (len(self.many(body[:cut], ndjson=True)), cut) if cut else (0, 0)


# -- duplicate keys and NUL ---------------------------------------------------

_NUL = b"\\u0000"


def _key_problem(pairs: list[tuple[str, Any]]) -> str | None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return f"duplicate key {_show(key)}: each key may appear once per event"
        if "\x00" in key:
            return f"host name {_show(key)} contains NUL (U+0000), which is not accepted"
        seen.add(key)
    return None


def _key_error(body: bytes, batch: bool, ndjson: bool = False) -> EventError | None:
    """The error for the first event with a duplicate key or a NUL in a key, if any.

    msgspec keeps the last of duplicate keys silently, so this re-reads the
    (already validated, flat) body with the standard library, which shows every
    pair. It runs only when the cheap comma count above cannot rule them out.
    """
    found: list[tuple[int, str]] = []
    seen = 0

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal seen
        problem = _key_problem(pairs)
        if problem is not None and not found:
            found.append((seen, problem))
        seen += 1
        return {}

    # Numbers are only read as far as their length: no int() of a 5,000-digit count.
    reader = json.JSONDecoder(object_pairs_hook=hook, parse_int=len, parse_float=len)
    if ndjson:
        for i, (start, raw) in enumerate(_ndjson_events(body)):
            reader.decode(raw.decode())
            if found:
                return EventError(f"line {_line(body, start)}: {found[0][1]}", i)
        return None
    reader.decode(body.decode())
    if not found:
        return None
    index, problem = found[0]
    return EventError(problem, index if batch else None)


# -- reading NDJSON as msgspec does ------------------------------------------

_WS = re.compile(rb"[ \t\r\n]*")
"""JSON whitespace: what msgspec skips between NDJSON events, and around any token."""

_RAW = msgspec.json.Decoder(msgspec.Raw)
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
_TRAILING = re.compile(r"JSON is malformed: trailing characters \(byte (\d+)\)")
_BYTE = re.compile(r"\(byte (\d+)\)$")
_LINE = re.compile(r"line (\d+): ")


def _after(body: bytes, pos: int, part: list[msgspec.Raw], joined: bytes) -> int:
    """Where the NDJSON values ``part`` (``joined`` by LF) end in ``body``, from ``pos``."""
    start = _end_of_space(body, pos)
    if body.startswith(joined, start):
        return start + len(joined)  # one LF between two values: the common case
    for raw in part:
        start = _end_of_space(body, start) + len(raw)
    return start


def _line(body: bytes, start: int) -> int:
    """The 1-based physical line of ``body[start]``: lines end at LF, blank ones count."""
    return body.count(b"\n", 0, start) + 1


def _ndjson_events(body: bytes) -> Iterator[tuple[int, bytes]]:
    """``(start, bytes)`` of each event of an NDJSON body, split as ``decode_lines`` splits it.

    msgspec checks the syntax (never the UTF-8 or a number's range) of raw
    values, so a body it reads yields its exact values. If the syntax is broken
    somewhere, the values are read one at a time up to the broken one, which is
    yielded with the rest of the body, for its explanation to name the fault.
    """
    try:
        raws = _RAW.decode_lines(body)
    except (msgspec.DecodeError, RecursionError):
        yield from _ndjson_walk(body, 0)
        return
    pos = 0
    for raw in raws:
        start = _end_of_space(body, pos)
        value = bytes(raw)
        pos = start + len(value)
        if body[start:pos] != value:
            raise RuntimeError(f"NDJSON value {value[:20]!r} not found at byte {start}")
        yield start, value


def _end_of_space(body: bytes, pos: int) -> int:
    space = _WS.match(body, pos)
    assert space is not None  # "*" matches the empty string
    return space.end()


def _on_its_line(body: bytes, error: EventError) -> EventError:
    """``error``, about NDJSON event ``error.index``, naming the line that event starts on."""
    assert error.index is not None
    start, _ = next(itertools.islice(_ndjson_events(body), error.index, None))
    return _placed(error, error.index, f"line {_line(body, start)}: ")


def _ndjson_walk(body: bytes, pos: int) -> Iterator[tuple[int, bytes]]:
    """The events from ``pos`` on, read one at a time: up to and with a broken one."""
    view = memoryview(body)
    pos = _end_of_space(body, pos)
    while pos < len(body):
        try:
            _RAW.decode(view[pos:])
        except msgspec.DecodeError as exc:
            trailing = _TRAILING.fullmatch(str(exc))
            if trailing is None:
                break  # the value at pos itself is broken
            # msgspec reports the first trailing character as already read.
            after = pos + int(trailing[1]) - 1
            if not pos < after < len(body) or body[after] in b" \t\r\n":
                raise RuntimeError(f"unexpected trailing position in {exc}") from None
            _RAW.decode(view[pos:after])  # a DecodeError here is a bug: the guard has it
            yield pos, body[pos:after]
            pos = after
        except RecursionError:
            break
        else:
            break
    if pos < len(body):
        yield pos, body[pos:]


# -- error texts --------------------------------------------------------------

_ACCEPTED = (
    'an event is a JSON object like {"timestamp": 1700000000, "example.com": 3}: '
    '"timestamp" in Unix seconds and at least one host with an integer count'
)
_MISSING_TIMESTAMP = f'missing "timestamp"; {_ACCEPTED}'
_NO_HOSTS = f"an event needs at least one host besides the timestamp; {_ACCEPTED}"


def _too_many_hosts(n: int, limit: int) -> str:
    return f"an event has {n} hosts; at most {limit} are accepted per event (--max-hosts)"


def _host_too_long(host: str) -> str:
    return (
        f"host name {_show(host)} is {len(host.encode())} bytes in UTF-8; "
        f"at most {MAX_HOST_BYTES} are accepted"
    )


def _show(value: Any, limit: int = 60) -> str:
    """A short, safe rendering of a user value for an error message."""
    text = msgspec.json.encode(value).decode() if _encodable(value) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _encodable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, float):
        return f"a number with a fraction or exponent ({value!r})"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return f"a string ({_show(value)})"
    if value is None:
        return "null"
    if isinstance(value, _Huge):
        digits = value.text.lstrip("-")
        if digits.isdigit():
            return f"a {len(digits)}-digit number"
        text = value.text if len(value.text) <= 40 else value.text[:37] + "..."
        return f"a number with a fraction or exponent, out of range ({text})"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _check_generic(obj: Any) -> str | None:
    """What is wrong with a generically decoded event, or ``None`` if nothing is.

    The host limit is checked after the fast decode succeeds, so it is not here.
    """
    if not isinstance(obj, dict):
        return f"an event must be a JSON object, got {_kind(obj)}; {_ACCEPTED}"
    if TIMESTAMP not in obj:
        return _MISSING_TIMESTAMP
    ts = obj[TIMESTAMP]
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= MAX_COUNT:
        return (
            f'"timestamp" must be an integer number of Unix seconds from 0 to {MAX_COUNT}, '
            f"got {_kind(ts)}"
        )
    if len(obj) == 1:
        return _NO_HOSTS
    for host, count in obj.items():
        if host == TIMESTAMP:
            continue
        if host == "":
            return "host names must not be empty"
        if len(host.encode("utf-8", "surrogatepass")) > MAX_HOST_BYTES:
            return _host_too_long(host)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            return (
                f"count for host {_show(host)} must be an integer from 0 to {MAX_COUNT}, "
                f"got {_kind(count)}"
            )
    return None


class _Huge:
    """Stands in for an integer too large for msgspec to decode, so messages can name it."""

    def __init__(self, text: bytes) -> None:
        self.text = text.strip(b" \t\r\n").decode("ascii", "replace")


def _lenient(raw: bytes) -> Any:
    """Decode valid JSON generically, keeping out-of-range numbers as :class:`_Huge`.

    Below an out-of-range number's top level, containers are read only as far
    as their kind: a message names no more, and reading deeper recursed once
    per level, past Python's limit before msgspec's.
    """
    try:
        return msgspec.json.decode(raw)
    except msgspec.ValidationError:
        head = raw.lstrip(b" \t\r\n")[:1]
        if head == b"{":
            obj = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
            return {key: _kind_of(bytes(value)) for key, value in obj.items()}
        if head == b"[":
            return [_kind_of(bytes(v)) for v in msgspec.json.decode(raw, type=list[msgspec.Raw])]
        return _Huge(raw)


def _kind_of(raw: bytes) -> Any:
    """A nested value, or for a container an empty one of its kind (see :func:`_kind`)."""
    head = raw[:1]
    if head == b"{":
        return {}
    if head == b"[":
        return []
    try:
        return msgspec.json.decode(raw)
    except msgspec.ValidationError:
        return _Huge(raw)


_DEEP = "the request body nests too deeply; events are flat JSON objects"
_NOT_JSON = "the request body is not valid UTF-8 JSON"


def _array_explained(body: bytes, size: int) -> Generator[list[Event], None, str | None]:
    """:func:`_explain_json` of a body that opens a JSON array whose values could not be
    found, reading it about ``size`` bytes a step (each step yields ``[]``); or
    ``None``, for the whole body's explanation to word it.

    The array is cut after a comma where the values before it read alone as an
    array: then the comma is the array's own, and what follows reads in ``[0,``
    as it does in the body (``[`` for the first part), the decoder being in the
    same state there. The generic decode of each part in turn then stops where
    the whole body's would, with the same message, its byte positions moved by
    where the part starts; the part left at the end holds the syntax error.
    """
    start = _end_of_space(body, 0)
    if body[start : start + 1] != b"[":
        return None
    pos, head = start + 1, b"["  # where the part starts, and what it reads after
    while True:
        end, span = -1, size
        # Events are objects: the comma after a "}" is the likely one.
        while (cut := body.find(b"},", pos + span) + 1) > 0:
            try:
                with _fixed_depth():
                    _RAW_LIST.decode(head + body[pos:cut] + b"]")
            except (msgspec.DecodeError, RecursionError):
                span *= 2  # inside a value, or a fault before it: look further
                yield []
                continue
            end = cut
            break
        part = head + (body[pos:end] + b"]" if end >= 0 else body[pos:])
        fault = yield from _fault_in(part, body, partial(_malformed, offset=pos - len(head)))
        if fault != "":
            return fault
        if end < 0:
            return None  # the rest reads: not what its scan said
        pos, head = end + 1, b"[0,"
        yield []


def _raws_explained(
    body: bytes, raws: list[msgspec.Raw], size: int
) -> Generator[list[Event], None, str | None]:
    """:func:`_explain_json` of an array body whose values ``raws`` were found, but
    which is not UTF-8: the values are decoded generically about ``size`` bytes a
    step, and the first refusal without a byte position is the whole body's (one
    with a position, or none: ``None``, for the whole body's explanation)."""
    totals: list[int] = []
    for _ in running_totals(raws, _lengths, totals):
        yield []
    for first, end in spans(totals, size):
        yield []
        part = b"[" + b",".join(raws[first:end]) + b"]"
        fault = yield from _fault_in(part, body, _unplaced)
        if fault != "":
            return fault
    return None


def _unplaced(exc: msgspec.DecodeError) -> str | None:
    """A fault of values joined anew, if its message names no byte to place."""
    return None if _BYTE.search(str(exc)) else _malformed(exc, 0)


def _fault_in(
    part: bytes, body: bytes, worded: Callable[[msgspec.DecodeError], str | None]
) -> Generator[list[Event], None, str | None]:
    """Where the generic decode of ``body`` stops, if it stops in ``part`` (a stretch of
    it, read in the state the whole decode is in there): its explanation, worded by
    ``worded`` for a fault of the part's own (``None``: explain the body whole);
    ``""`` if the part reads."""
    try:
        with _fixed_depth():
            msgspec.json.decode(part)
    except RecursionError:
        return _DEEP
    except msgspec.ValidationError:
        yield []  # an out-of-range number: the whole decode stops there, then reads on
        with _fixed_depth():
            return _explain_past_range(body)
    except msgspec.DecodeError as exc:
        return worded(exc)
    return ""


def _lines_cut(body: bytes, syntax: Exception) -> int:
    """Where the whole lines of an NDJSON ``body`` before its syntax error end, if
    they hold values that read alone (0 if not)."""
    position = _BYTE.search(str(syntax))
    end = int(position[1]) - 1 if position else len(body)
    cut = body.rfind(b"\n", 0, max(end, 0)) + 1
    if cut == 0 or _WS.fullmatch(body, 0, cut):
        return 0
    try:
        _RAW.decode_lines(memoryview(body)[:cut])
    except (msgspec.DecodeError, RecursionError):
        return 0
    return cut


def _is_utf8(body: bytes) -> bool:
    if body.isascii():
        return True
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _explain_json(body: bytes, offset: int = 0) -> str | None:
    """Why ``body`` is not a JSON document at all, or ``None`` if it is one.

    ``offset`` is where ``body`` starts in the request body, for the byte
    positions in the message.
    """
    if _WS.fullmatch(body):
        return f"the request body is empty; {_ACCEPTED}"
    try:
        msgspec.json.decode(body)
        return None
    except RecursionError:
        return _DEEP
    except msgspec.ValidationError:
        pass  # an out-of-range number: the decode stopped there, so read on
    except msgspec.DecodeError as exc:
        return _malformed(exc, offset)
    return _explain_past_range(body, offset)


def _explain_past_range(body: bytes, offset: int = 0) -> str | None:
    """:func:`_explain_json` once the generic decode stopped at an out-of-range number."""
    # A raw decode checks the syntax without numbers' ranges, but not UTF-8.
    try:
        _RAW.decode(body)
    except RecursionError:
        return _DEEP
    except msgspec.DecodeError as exc:
        return _malformed(exc, offset)
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        return f"{_NOT_JSON}: Invalid UTF-8 encoded string (byte {offset + exc.start})"
    return None


def _malformed(exc: msgspec.DecodeError, offset: int) -> str:
    detail = str(exc)
    if "truncated" in detail:
        detail = "it ends early, or holds an invalid string escape such as a lone surrogate"
    elif offset:
        detail = _BYTE.sub(lambda m: f"(byte {int(m[1]) + offset})", detail)
    return f"{_NOT_JSON}: {detail}"


def _explain_one(body: bytes) -> EventError | None:
    reason = _explain_json(body) or _check_generic(_lenient(body))
    if reason is None:
        # The generic reading keeps the last of repeated keys, and the last may
        # be valid where an earlier one is not: the repetition is the fault.
        return _key_error(body, batch=False)
    return EventError(reason)


def _placed(error: EventError, index: int, prefix: str = "") -> EventError:
    """``error`` as the error of the batch's event ``index``, its cause kept."""
    placed = EventError(prefix + error.message, index, error.status)
    placed.__cause__ = error.__cause__
    return placed


_UNEXPLAINED = (
    "the request body was refused, but tophosts could not say why (an internal error, "
    f"logged); {_ACCEPTED}"
)


def _unexplained(cause: BaseException) -> EventError:
    """The generic refusal for a failure no check accounts for: a bug, logged with its cause."""
    _log.error("could not explain why a request body was refused", exc_info=cause)
    error = EventError(_UNEXPLAINED)
    error.__cause__ = cause
    return error


def _explained(
    refusal: BaseException, explain: Callable[[bytes], EventError | None], body: bytes
) -> EventError:
    """What ``explain`` says about a body msgspec refused with ``refusal``; never raises.

    An explanation that raises, or finds nothing wrong with a refused body, is
    a bug: the caller still gets an :class:`EventError`, with the cause kept.
    """
    try:
        with _fixed_depth():
            error = explain(body)
    except Exception as exc:
        return _unexplained(exc)
    return _unexplained(refusal) if error is None else error


_EXPLAIN_DEPTH = 1000
"""Levels of the stack an explanation may use below where it starts, msgspec's nesting
included (Python's default limit, as from an empty stack): a body nesting deeper is
explained as nesting too deeply."""


@contextlib.contextmanager
def _fixed_depth() -> Iterator[None]:
    """Give what runs inside the same recursion budget, however deep the caller's stack.

    Python 3.11 counts msgspec's nesting against the same limit as Python frames,
    so that, without this, a body nesting a few hundred levels deep was called
    malformed (its syntax error reached) from a shallow caller and too deep from
    a deeper one (the decoder's slices, found by the fuzzer).
    """
    depth = 0
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + _EXPLAIN_DEPTH)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def too_far_ahead(timestamp: int, now: float, max_skew: int, index: int | None) -> EventError:
    """The error for an event stamped more than ``max_skew`` seconds after ``now``."""
    return EventError(
        f"timestamp {timestamp} is {timestamp - int(now)} s ahead of the server clock "
        f"({int(now)}); at most {max_skew} s ahead is accepted (--max-skew)",
        index,
    )


def too_many_tracked(size: int, host: str, limit: int, index: int | None) -> EventError:
    """The error for an event that would add a host past ``--max-tracked-hosts``."""
    window = label(size)
    return EventError(
        f"the {window} window already tracks {limit} hosts (--max-tracked-hosts); an event "
        f"adding a new host such as {_show(host)} is refused whole, while known hosts keep "
        "counting",
        index,
        status=429,
    )


def total_too_large(host: str, index: int | None) -> EventError:
    """The error for an event that would push a host's window total past ``MAX_COUNT``."""
    return EventError(
        f"the count for host {_show(host)} would take its window total past {MAX_COUNT}, "
        "the largest total kept exactly; the event was not applied",
        index,
    )


def check_host(host: str) -> None:
    """Raise :class:`EventError` for a host name that no ingest path accepts.

    The rules of a host in a ``POST /counter`` body, for hosts that arrive
    another way (the syslog receiver): non-empty, no NUL, at most
    ``MAX_HOST_BYTES`` bytes of UTF-8.
    """
    if not host:
        raise EventError("host names must not be empty")
    if "\x00" in host:
        raise EventError(f"host name {_show(host)} contains NUL (U+0000), which is not accepted")
    if (
        len(host) * 4 > MAX_HOST_BYTES
        and len(host.encode("utf-8", "surrogatepass")) > MAX_HOST_BYTES
    ):
        raise EventError(_host_too_long(host))
