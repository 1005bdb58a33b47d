"""An independent reading of the event rules, written with the standard library only.

The decoder harnesses hold :mod:`tophosts.events` to it: the decoder must accept
exactly the bodies this accepts, with the same values, and name the same event
(and NDJSON line) when it refuses one. It shares nothing with the decoder but
the two limits; it is slow and simple on purpose.

JSON is read as msgspec reads it: strict RFC 8259 (no NaN or Infinity), UTF-8,
no lone surrogates anywhere. NDJSON is one JSON value after another, separated
by JSON whitespace or by nothing; a line ends at LF.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tophosts.events import MAX_COUNT, MAX_HOST_BYTES


class Pairs(list[tuple[str, Any]]):
    """A JSON object as its list of pairs, duplicates and order kept."""


class _Huge:
    """An integer of more digits than ``int()`` reads: out of range, still JSON."""


class Malformed(Exception):
    """Not JSON as msgspec reads it."""


class Unknown(Exception):
    """The standard library cannot tell: nesting past its recursion limit."""


def _constant(name: str) -> Any:
    raise Malformed(name)


def _integer(text: str) -> int | _Huge:
    return int(text) if len(text) <= 4000 else _Huge()


_JSON = json.JSONDecoder(object_pairs_hook=Pairs, parse_constant=_constant, parse_int=_integer)
_WS = " \t\n\r"


def _text(data: bytes) -> str:
    # Invalid UTF-8 becomes lone surrogates, which _strings_ok refuses wherever they are.
    return data.decode("utf-8", "surrogateescape")


def _strings_ok(value: Any) -> bool:
    """No string anywhere in ``value`` holds a surrogate (iterative: values nest deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, Pairs):
            for key, inner in item:
                stack += (key, inner)
        elif isinstance(item, list):
            stack += item
    return True


def _document(text: str) -> Any:
    """The one JSON value of ``text``; raises Malformed or Unknown."""
    try:
        value = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise Malformed(str(exc)) from None
    except RecursionError:
        raise Unknown from None
    if not _strings_ok(value):
        raise Malformed("a lone surrogate or invalid UTF-8 in a string")
    return value


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT


def event_problem(value: Any, max_hosts: int) -> str | None:
    """What is wrong with one decoded event, or ``None``."""
    if not isinstance(value, Pairs):
        return "not an object"
    keys = [key for key, _ in value]
    if len(set(keys)) != len(keys):
        return "duplicate key"
    if any("\x00" in key for key in keys):
        return "NUL in a key"
    counts = dict(value)
    if "timestamp" not in counts:
        return "no timestamp"
    if not _is_count(counts.pop("timestamp")):
        return "bad timestamp"
    if not counts:
        return "no hosts"
    if len(counts) > max_hosts:
        return "too many hosts"
    for host, count in counts.items():
        if not host or len(host.encode()) > MAX_HOST_BYTES:
            return "bad host name"
        if not _is_count(count):
            return "bad count"
    return None


Event = tuple[int, dict[str, int]]


def _as_event(value: Pairs) -> Event:
    counts = dict(value)
    return counts.pop("timestamp"), counts


@dataclass
class Verdict:
    """What the reference makes of a body.

    ``events`` when it is accepted; otherwise ``index`` (the first offending
    event, or ``None`` for the body as a whole) and, for NDJSON, ``line``.
    ``known`` is false when the reference cannot tell (deep nesting).
    """

    events: list[Event] | None = None
    index: int | None = None
    line: int | None = None
    known: bool = True


def one(data: bytes, max_hosts: int) -> Verdict:
    try:
        value = _document(_text(data))
    except Malformed:
        return Verdict()
    except Unknown:
        return Verdict(known=False)
    if event_problem(value, max_hosts) is not None:
        return Verdict()
    return Verdict(events=[_as_event(value)])


def array(data: bytes, max_hosts: int) -> Verdict:
    try:
        value = _document(_text(data))
    except Malformed:
        return Verdict()
    except Unknown:
        return Verdict(known=False)
    if not isinstance(value, list) or isinstance(value, Pairs):
        return Verdict()
    for i, item in enumerate(value):
        if event_problem(item, max_hosts) is not None:
            return Verdict(index=i)
    return Verdict(events=[_as_event(item) for item in value])


def ndjson(data: bytes, max_hosts: int) -> Verdict:
    text = _text(data)
    events: list[Event] = []
    pos = len(text) - len(text.lstrip(_WS))
    while pos < len(text):
        line = text.count("\n", 0, pos) + 1
        index = len(events)
        try:
            value, end = _JSON.raw_decode(text, pos)
        except (json.JSONDecodeError, Malformed):
            return Verdict(index=index, line=line)
        except RecursionError:
            return Verdict(index=index, line=line, known=False)
        if not _strings_ok(value) or event_problem(value, max_hosts) is not None:
            return Verdict(index=index, line=line)
        events.append(_as_event(value))
        pos = end + len(text[end:]) - len(text[end:].lstrip(_WS))
    return Verdict(events=events) if events else Verdict()
