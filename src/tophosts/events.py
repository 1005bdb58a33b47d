"""Decode and validate request bodies into events.

An event is ``{"timestamp": <unix seconds>, "<host>": <requests>, ...}``. Decoding
is all-or-nothing: a body either yields a list of fully valid events or raises
:class:`EventError` naming the first offending event, key or value.

The fast path is a typed msgspec decode. Only when that fails do we walk the
generic JSON again to say precisely what is wrong, so error texts cost nothing
on valid input.
"""

from __future__ import annotations

import itertools
import json
from typing import Annotated, Any

import msgspec

MAX_COUNT = 2**53 - 1
"""Largest count (and total) we accept: beyond it doubles, and so Redis scores, lose integers."""

MAX_HOST_BYTES = 255
TIMESTAMP = "timestamp"

Event = tuple[int, dict[str, int]]
"""``(timestamp, {host: count})``: the validated form the stores take."""

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
_Host = Annotated[str, msgspec.Meta(min_length=1)]
_OBJECT = dict[_Host, Count]


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
        try:
            obj = self._one.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise EventError(_explain_one(body)) from None
        # A NUL escape needs a backslash: look for one byte first (memchr).
        if body.count(b",") != len(obj) - 1 or (b"\\" in body and _NUL in body):
            _check_keys(body, batch=False)
        timestamp = obj.pop(TIMESTAMP, None)
        # A body of at most MAX_HOST_BYTES cannot hold a longer host name: JSON
        # never spells a name in fewer bytes than its UTF-8.
        if timestamp is None or not obj or len(obj) > self.max_hosts or len(body) > MAX_HOST_BYTES:
            self._check(timestamp, obj, None)
        return timestamp, obj  # type: ignore[return-value]  # _check ruled out None

    def many(self, body: bytes, ndjson: bool = False) -> list[Event]:
        """Decode a batch (``POST /counters``): a JSON array, or NDJSON lines."""
        try:
            objs = self._many_ndjson(body) if ndjson else self._many.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise _explain_batch(body, ndjson) from None
        # In a flat event every comma separates two members, so a body with
        # more commas than that holds a duplicate key (or a host name with a
        # comma in it): only then is the exact, slower check needed.
        members = sum(map(len, objs))
        separators = len(objs) - 1 if not ndjson else 0
        if body.count(b",") != members - len(objs) + separators or _NUL in body:
            _check_keys(body, batch=True, ndjson=ndjson)
        stamps = [obj.pop(TIMESTAMP, None) for obj in objs]
        # Check the whole batch at C speed; walk it event by event only to name
        # the first offending one.
        if objs and (
            None in stamps
            or not all(objs)
            or max(map(len, objs)) > self.max_hosts
            or max(map(len, itertools.chain.from_iterable(objs))) * 4 > MAX_HOST_BYTES
        ):
            for i, (timestamp, obj) in enumerate(zip(stamps, objs, strict=True)):
                self._check(timestamp, obj, i)
        return list(zip(stamps, objs, strict=True))  # type: ignore[arg-type]  # no None left

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


def _check_keys(body: bytes, batch: bool, ndjson: bool = False) -> None:
    """Raise :class:`EventError` for the first event with a duplicate key or a NUL in a key.

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

    if ndjson:
        lines = [line for line in body.splitlines() if line.strip()]
        for i, line in enumerate(lines):
            json.loads(line, object_pairs_hook=hook)
            if found:
                raise EventError(f"line {i + 1}: {found[0][1]}", i)
        return
    json.loads(body, object_pairs_hook=hook)
    if found:
        index, problem = found[0]
        raise EventError(problem, index if batch else None)


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
        return f"a {value.digits}-digit number"
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
        self.digits = len(text.strip().lstrip(b"-"))


def _lenient(raw: bytes) -> Any:
    """Decode valid JSON generically, keeping out-of-range integers as :class:`_Huge`."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.ValidationError:
        head = raw.lstrip()[:1]
        if head == b"{":
            obj = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
            return {key: _lenient(bytes(value)) for key, value in obj.items()}
        if head == b"[":
            return [_lenient(bytes(v)) for v in msgspec.json.decode(raw, type=list[msgspec.Raw])]
        return _Huge(raw)


def _explain_json(body: bytes) -> str | None:
    """Why ``body`` is not a JSON document at all, or ``None`` if it is one."""
    if not body.strip():
        return f"the request body is empty; {_ACCEPTED}"
    try:
        msgspec.json.decode(body)
    except RecursionError:
        return "the request body nests too deeply; events are flat JSON objects"
    except msgspec.ValidationError:
        return None  # well-formed, with an integer out of range: _lenient names it
    except msgspec.DecodeError as exc:
        detail = str(exc)
        if "truncated" in detail:
            detail = "it ends early, or holds an invalid string escape such as a lone surrogate"
        return f"the request body is not valid UTF-8 JSON: {detail}"
    return None


def _explain_one(body: bytes) -> str:
    reason = _explain_json(body) or _check_generic(_lenient(body))
    return reason or f"the event is invalid; {_ACCEPTED}"


def _explain_batch(body: bytes, ndjson: bool) -> EventError:
    if ndjson:
        lines = [line for line in body.splitlines() if line.strip()]
        if not lines:
            return EventError(f"the request body has no events; {_ACCEPTED}")
        for i, line in enumerate(lines):
            reason = _explain_json(line) or _check_generic(_lenient(line))
            if reason is not None:
                return EventError(f"line {i + 1}: {reason}", i)
        return EventError(f"the NDJSON body is invalid; {_ACCEPTED}")
    reason = _explain_json(body)
    if reason is not None:
        return EventError(reason)
    objs = _lenient(body)
    if not isinstance(objs, list):
        return EventError(f"a batch must be a JSON array of events, got {_kind(objs)}")
    for i, obj in enumerate(objs):
        reason = _check_generic(obj)
        if reason is not None:
            return EventError(reason, i)
    return EventError(f"the batch is invalid; {_ACCEPTED}")


def too_far_ahead(timestamp: int, now: float, max_skew: int, index: int | None) -> EventError:
    """The error for an event stamped more than ``max_skew`` seconds after ``now``."""
    return EventError(
        f"timestamp {timestamp} is {timestamp - int(now)} s ahead of the server clock "
        f"({int(now)}); at most {max_skew} s ahead is accepted (--max-skew)",
        index,
    )


def too_many_tracked(size: int, host: str, limit: int, index: int | None) -> EventError:
    """The error for an event that would add a host past ``--max-tracked-hosts``."""
    window = "minute" if size == 60 else "hour"
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
