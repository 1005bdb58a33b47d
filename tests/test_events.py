from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tophosts.events import MAX_COUNT, Decoder, Event, EventError

decoder = Decoder(max_hosts=5)


def one_error(body: bytes) -> EventError:
    with pytest.raises(EventError) as info:
        decoder.one(body)
    return info.value


def test_a_valid_event_decodes_into_timestamp_and_counts() -> None:
    assert decoder.one(b'{"timestamp": 100, "a.com": 3, "b.com": 0}') == (
        100,
        {"a.com": 3, "b.com": 0},
    )


def test_a_batch_decodes_in_order() -> None:
    body = b'[{"timestamp": 1, "a": 1}, {"b": 2, "timestamp": 2}]'
    assert decoder.many(body) == [(1, {"a": 1}), (2, {"b": 2})]


def test_an_empty_array_is_an_empty_batch() -> None:
    assert decoder.many(b"[]") == []


def test_ndjson_batches_skip_blank_lines() -> None:
    body = b'{"timestamp": 1, "a": 1}\n\n{"timestamp": 2, "b": 2}\n'
    assert decoder.many(body, ndjson=True) == [(1, {"a": 1}), (2, {"b": 2})]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", ["empty"]),
        (b"   ", ["empty"]),
        (b"{", ["not valid UTF-8 JSON"]),
        (b'{"timestamp": 1, "a": 1}x', ["not valid UTF-8 JSON", "trailing"]),
        (b'{"timestamp": 1, "\xff": 1}', ["not valid UTF-8 JSON"]),
        (b'{"timestamp": 1, "\\ud800": 1}', ["not valid UTF-8 JSON", "lone surrogate"]),
        (b'{"timestamp": 1, "a": NaN}', ["not valid UTF-8 JSON"]),
        (b"[" * 100_000 + b"]" * 100_000, ["nests too deeply"]),
        (b"[]", ["must be a JSON object", "an array"]),
        (b'"a"', ["must be a JSON object", '"a"']),
        (b'{"a": 1}', ['missing "timestamp"']),
        (b'{"timestamp": 1}', ["at least one host"]),
        (b'{"timestamp": -1, "a": 1}', ['"timestamp" must be an integer', "got -1"]),
        (b'{"timestamp": 1.5, "a": 1}', ['"timestamp" must be an integer', "1.5"]),
        (b'{"timestamp": "1", "a": 1}', ['"timestamp" must be an integer', 'a string ("1")']),
        (b'{"timestamp": 1, "a.com": true}', ['host "a.com"', "a boolean (true)"]),
        (b'{"timestamp": 1, "a.com": 2.0}', ['host "a.com"', "2.0"]),
        (b'{"timestamp": 1, "a.com": -3}', ['host "a.com"', "got -3"]),
        (b'{"timestamp": 1, "a.com": null}', ['host "a.com"', "null"]),
        (b'{"timestamp": 1, "a.com": {"x": 1}}', ['host "a.com"', "an object"]),
        (b'{"timestamp": 1, "a": 9007199254740992}', ['host "a"', "9007199254740991"]),
        (b'{"timestamp": 1, "a": 1' + b"0" * 10_000 + b"}", ['host "a"', "9007199254740991"]),
        (b'{"timestamp": 1, "": 1}', ["must not be empty"]),
        (
            b'{"timestamp": 1, "a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1}',
            ["6 hosts", "at most 5"],
        ),
    ],
)
def test_invalid_events_say_what_is_wrong(body: bytes, words: list[str]) -> None:
    message = one_error(body).message
    for word in words:
        assert word in message


def test_host_names_are_limited_to_255_utf8_bytes_not_characters() -> None:
    assert decoder.one(msgspec.json.encode({"timestamp": 1, "x" * 255: 1}))[1] == {"x" * 255: 1}
    assert decoder.one(msgspec.json.encode({"timestamp": 1, "\U0001f600" * 63: 1}))[0] == 1
    error = one_error(msgspec.json.encode({"timestamp": 1, "\U0001f600" * 64: 1}))
    assert "256 bytes" in error.message
    assert "at most 255" in error.message
    assert "x" * 256 not in one_error(msgspec.json.encode({"timestamp": 1, "x" * 256: 1})).message


def test_any_unicode_host_is_accepted() -> None:
    assert decoder.one('{"timestamp": 1, "bücher.de": 1, "例え.jp": 2}'.encode()) == (
        1,
        {"bücher.de": 1, "例え.jp": 2},
    )


def test_batch_errors_name_the_first_bad_event() -> None:
    with pytest.raises(EventError) as info:
        decoder.many(b'[{"timestamp": 1, "a": 1}, {"timestamp": 1}, {"timestamp": 1, "a": true}]')
    assert info.value.index == 1
    assert "at least one host" in info.value.message


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"a": 1}, ["timestamp"]),
        ({"timestamp": 1}, ["at least one host"]),
        ({"timestamp": 1, **{f"h{i}": 1 for i in range(6)}}, ["6 hosts", "at most 5"]),
        ({"timestamp": 1, "\U0001f600" * 64: 1}, ["256 bytes"]),
    ],
)
def test_the_whole_batch_check_names_the_same_event_as_one_by_one(
    bad: dict[str, int], words: list[str]
) -> None:
    # Events 2 and 4 are both bad; the batch is checked at once, but the
    # error must still name the first of them, exactly as one() words it.
    good = {"timestamp": 1, "a": 1}
    long_host = {"timestamp": 1, "x" * 300: 1}
    body = msgspec.json.encode([good, good, bad, good, long_host])
    with pytest.raises(EventError) as info:
        decoder.many(body)
    assert info.value.index == 2
    assert info.value.message == one_error(msgspec.json.encode(bad)).message
    for word in words:
        assert word in info.value.message


def test_a_batch_at_the_host_limits_is_accepted() -> None:
    events = [{"timestamp": 1, **{f"h{i}": 1 for i in range(5)}}, {"timestamp": 2, "x" * 255: 1}]
    assert decoder.many(msgspec.json.encode(events)) == [
        (1, {f"h{i}": 1 for i in range(5)}),
        (2, {"x" * 255: 1}),
    ]


def test_batch_that_is_not_an_array() -> None:
    with pytest.raises(EventError) as info:
        decoder.many(b'{"timestamp": 1, "a": 1}')
    assert info.value.index is None
    assert "JSON array" in info.value.message


def test_ndjson_errors_name_the_line_and_index() -> None:
    with pytest.raises(EventError) as info:
        decoder.many(b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "a": "x"}\n', ndjson=True)
    assert info.value.index == 1
    assert info.value.message.startswith("line 2: ")


def test_ndjson_with_no_events_is_refused() -> None:
    with pytest.raises(EventError) as info:
        decoder.many(b"\n\n", ndjson=True)
    assert "no events" in info.value.message


hosts = st.text(min_size=1, max_size=20).filter(lambda h: h != "timestamp" and "\x00" not in h)
events = st.fixed_dictionaries(
    {"timestamp": st.integers(0, MAX_COUNT)},
    optional={},
).flatmap(
    lambda base: st.dictionaries(hosts, st.integers(0, MAX_COUNT), min_size=1, max_size=5).map(
        lambda counts: {**base, **counts}
    )
)


@given(event=events)
def test_every_valid_event_round_trips(event: dict[str, int]) -> None:
    counts = dict(event)
    ts = counts.pop("timestamp")
    assert decoder.one(msgspec.json.encode(event)) == (ts, counts)


@given(batch=st.lists(events, max_size=10))
def test_every_valid_batch_round_trips_as_json_and_ndjson(batch: list[dict[str, int]]) -> None:
    expected = [(e["timestamp"], {h: n for h, n in e.items() if h != "timestamp"}) for e in batch]
    assert decoder.many(msgspec.json.encode(batch)) == expected
    if batch:
        ndjson = b"\n".join(msgspec.json.encode(e) for e in batch)
        assert decoder.many(ndjson, ndjson=True) == expected


@given(event=events, data=st.data())
def test_a_repeated_key_is_always_found(event: dict[str, int], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(event)))
    body = msgspec.json.encode(event)[:-1] + b", " + msgspec.json.encode(key) + b": 1}"
    with pytest.raises(EventError, match="duplicate key"):
        decoder.one(body)
    with pytest.raises(EventError, match="duplicate key") as info:
        decoder.many(b"[" + msgspec.json.encode(event) + b"," + body + b"]")
    assert info.value.index == 1


# -- issue 11: the NDJSON reading, out-of-range numbers, and the guard --------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # One event across two lines, a comma in its host name (defect 1).
        (b'{"timestamp": 1,\n"a,b": 1}\n', [(1, {"a,b": 1})]),
        # Two events on one line, either with a comma in a host name.
        (
            b'{"timestamp": 1, "a,b": 1} {"timestamp": 2, "c": 2}\n',
            [(1, {"a,b": 1}), (2, {"c": 2})],
        ),
        (b'{"timestamp": 1, "a": 1}{"timestamp": 2, "c,d": 2}', [(1, {"a": 1}), (2, {"c,d": 2})]),
        # A CR inside an event, and CRLF line ends.
        (
            b'{"timestamp": 1,\r"a,b": 1}\r\n{"timestamp": 2, "c": 2}\r\n',
            [(1, {"a,b": 1}), (2, {"c": 2})],
        ),
    ],
)
def test_ndjson_events_are_read_the_same_way_by_every_check(
    body: bytes, expected: list[tuple[int, dict[str, int]]]
) -> None:
    assert decoder.many(body, ndjson=True) == expected


@pytest.mark.parametrize(
    ("body", "index", "line"),
    [
        (b'{"timestamp": 1, "a": 1} {"timestamp": 1, "b,": 1, "b,": 2}\n', 1, 1),
        (b'{"timestamp": 1, "a": 1}\n{"timestamp": 1,\n"b": 1,\n"b": 2}\n', 1, 2),
        (b'{"timestamp": 1, "a": 1}\r\n\r\n{"timestamp": 1, "b": 1, "b": 2}\r\n', 1, 3),
        (b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "b\\u0000": 1}', 1, 2),
    ],
)
def test_ndjson_duplicates_and_nul_name_the_event_and_its_line(
    body: bytes, index: int, line: int
) -> None:
    with pytest.raises(EventError) as info:
        decoder.many(body, ndjson=True)
    assert info.value.index == index
    assert info.value.message.startswith(f"line {line}: ")
    assert "duplicate key" in info.value.message or "NUL" in info.value.message


@pytest.mark.parametrize(
    ("body", "index", "line", "words"),
    [
        # Blank lines count: the bad event is on the third physical line (defect 11).
        (b'{"timestamp": 1, "a": 1}\n\n{"timestamp": 1, "a": "x"}\n', 1, 3, 'a string ("x")'),
        (b'\n\n\n{"timestamp": 1}\n', 0, 4, "at least one host"),
        (b'{"timestamp": 1, "a": 1}\r\n   \r\n\t\n{"timestamp": 1, "a": -1}', 1, 4, "got -1"),
        # An event spanning lines is named by the line it starts on.
        (b'{"timestamp": 1, "a": 1}\n{"timestamp": 1,\n"a": true}', 1, 2, "a boolean"),
        # Two events on one line share it; the index tells them apart.
        (b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "a": 1} {"a": 1}', 2, 2, '"timestamp"'),
        # A syntax error: the line of the event, the byte counted from the body's start.
        (b'{"timestamp": 1, "a": 1}\n\n{"timestamp": 1, "a": x}', 1, 3, "(byte 48)"),
        (b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "a": 1} x', 2, 2, "(byte 50)"),
        (b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "\xff": 1}', 1, 2, "UTF-8"),
        (b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "a": 1', 1, 2, "ends early"),
    ],
)
def test_ndjson_errors_name_the_physical_line(
    body: bytes, index: int, line: int, words: str
) -> None:
    with pytest.raises(EventError) as info:
        decoder.many(body, ndjson=True)
    assert (info.value.index, info.value.message.split(":")[0]) == (index, f"line {line}")
    assert words in info.value.message


@pytest.mark.parametrize(
    "body",
    [
        b'{"timestamp": 1, "a": 1e400',
        b'{"timestamp": 1, "a": 1e400, "b": }',
        b'{"timestamp": 1e400, "a": 1e400 x',
        b'{"timestamp": 1, "a": -1e400, "b": "\\ud800"}',
        b'{"timestamp": 1, "a": 1' + b"0" * 5000 + b', "b": [}',
    ],
)
def test_malformed_json_holding_an_out_of_range_number_is_malformed(body: bytes) -> None:
    message = one_error(body).message
    assert "not valid UTF-8 JSON" in message
    for batch, ndjson in [(b"[" + body, False), (b"[1e400, " + body + b"]", False), (body, True)]:
        with pytest.raises(EventError) as info:
            decoder.many(batch, ndjson=ndjson)
        assert "not valid UTF-8 JSON" in info.value.message


def test_invalid_utf8_after_an_out_of_range_number_is_still_invalid_utf8() -> None:
    message = one_error(b'{"timestamp": 1, "a": 1e400, "\xff": 1}').message
    assert "not valid UTF-8" in message


def test_a_well_formed_out_of_range_float_is_named() -> None:
    message = one_error(b'{"timestamp": 1, "a": 1e400}').message
    assert message.startswith('count for host "a" must be an integer')
    assert "1e400" in message


def test_an_unexpected_failure_in_a_check_is_still_an_event_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The boundary: whatever goes wrong while explaining a refusal, the caller
    # sees an EventError (a 400), the cause is kept and logged, never a 500.
    import tophosts.events

    def broken(obj: object) -> str | None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(tophosts.events, "_check_generic", broken)
    for call in (
        lambda: decoder.one(b'{"timestamp": 1, "a": true}'),
        lambda: decoder.many(b'[{"timestamp": 1, "a": true}]'),
        lambda: decoder.many(b'{"timestamp": 1, "a": true}', ndjson=True),
    ):
        with pytest.raises(EventError) as info:
            call()
        assert info.value.status == 400
        assert "could not say why" in info.value.message
        assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert "ZeroDivisionError" in caplog.text


@pytest.mark.parametrize("ndjson", [False, True])
def test_an_event_before_a_duplicate_key_is_named_first(ndjson: bool) -> None:
    events = [b'{"timestamp": 1, "a": 1}', b'{"a": 1}', b'{"timestamp": 1, "b": 1, "b": 2}']
    body = b"\n".join(events) if ndjson else b"[" + b",".join(events) + b"]"
    with pytest.raises(EventError) as info:
        decoder.many(body, ndjson=ndjson)
    assert info.value.index == 1
    assert 'missing "timestamp"' in info.value.message


# -- found by the fuzzers (tests/fuzz/regressions/) ---------------------------


@pytest.mark.parametrize(
    "body",
    [
        # A repeated key whose first value is out of range and whose last is fine:
        # the generic reading kept the last, and found nothing to explain.
        b'{"timestamp": 16991e4000, "a": 1, "timestamp": 1699999920}',
        b'{"timestamp": 169.999920, "a": 1, "timestamp": 1699999920}',
        b'{"timestamp": 1, "a": 1' + b"0" * 5000 + b', "a": 1}',
    ],
)
def test_a_repeated_key_hiding_a_bad_value_is_named(body: bytes) -> None:
    error = one_error(body)
    assert error.__cause__ is None
    assert "duplicate key" in error.message


@pytest.mark.parametrize(
    ("body", "index", "line", "words"),
    [
        # A syntax error late in the body; an earlier event is the first bad one.
        (b'{"timestamp": 1, "a": 1, "a": 2}\n{"timestamp": 1, "a": 1}\n{x', 0, 1, "duplicate"),
        (
            b'{"timestamp": 1, "a": 1}\n{"timestamp": 1}\n\n{"timestamp": 1, "a": 1}\n{x',
            1,
            2,
            "host",
        ),
        # The last line end before the error is inside an event.
        (b'{"timestamp": 1,\n"a": 1}\n{"timestamp": 1,\n"a": x}', 1, 3, "(byte 47)"),
        (b'{"timestamp": 1, "a": 1}\n\n{"timestamp": 1,\n\n"a": 1e400', 1, 3, "ends early"),
    ],
)
def test_ndjson_syntax_errors_after_valid_lines(
    body: bytes, index: int, line: int, words: str
) -> None:
    with pytest.raises(EventError) as info:
        decoder.many(body, ndjson=True)
    assert (info.value.index, info.value.message.split(":")[0]) == (index, f"line {line}")
    assert words in info.value.message
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[" * 900 + b"1e400" + b"]" * 900, "got an array"),
        (b'{"timestamp": 1, "a": ' + b"[" * 900 + b"1e400" + b"]" * 900 + b"}", "got an array"),
        (b'{"timestamp": 1, "a": {"b": ' + b"[" * 900 + b"-1e400" + b"]" * 900 + b"}}", "object"),
    ],
)
def test_an_out_of_range_number_deep_inside_is_explained_without_recursion(
    body: bytes, words: str
) -> None:
    # The generic re-reading of a body holding 1e400 recursed once per level
    # (twice the frames), past Python's limit long before msgspec's.
    error = one_error(body)
    assert error.__cause__ is None
    assert words in error.message


def _events(n: int, ndjson: bool, start: int = 0) -> bytes:
    events = [b'{"timestamp":%d,"h%d.example":1}' % (1000 + i, i) for i in range(start, n)]
    return b"\n".join(events) if ndjson else b"[" + b",".join(events) + b"]"


# Bodies whose values msgspec cannot find (a syntax error, an end too early, bytes
# that are not UTF-8): refused without the typed decode of the whole body first,
# and NDJSON's lines before the error read in slices.
_MALFORMED = {
    "array cut short": (_events(200, False)[:-1], False),
    "array with a syntax error at its end": (_events(200, False)[:-1] + b",]", False),
    "array with a bad count, then cut short": (
        _events(100, False)[:-1] + b',{"timestamp":1,"x":-1},' + _events(100, False)[1:-1],
        False,
    ),
    "array not UTF-8 at its end": (_events(200, False)[:-1] + b',{"timestamp":1,"\xff":1}]', False),
    "object cut short": (b'{"a":1,' * 300, False),
    "array whose hosts hold '},' and quotes, then a syntax error": (
        b"["
        + b",".join(b'{"timestamp":%d,"h},\\"%d":1}' % (i, i) for i in range(300))
        + b',{"timestamp" 1}]',
        False,
    ),
    # The last event is longer than a slice: the part after it starts at "]".
    "array whose last event is long, then a trailing comma": (
        _events(50, False)[:-1] + b',{"timestamp":1,"' + b"h" * 250 + b'":1},],{"a":1}]',
        False,
    ),
    "array with a syntax error in its middle": (
        _events(150, False)[:-1] + b',{"timestamp" 1},' + _events(150, False)[1:],
        False,
    ),
    "array with a trailing comma in its middle": (
        _events(100, False)[:-1] + b",," + _events(100, False)[1:],
        False,
    ),
    "array with an out-of-range number, then cut short": (
        _events(100, False)[:-1] + b',{"timestamp":1,"x":1e400},' + _events(100, False)[1:-1],
        False,
    ),
    "array not UTF-8 early, cut short late": (
        b'[{"timestamp":1,"\xff":1},' + _events(200, False)[1:-1],
        False,
    ),
    "array with an event too deep, then cut short": (
        _events(100, False)[:-1] + b"," + b"[" * 2000 + _events(100, False)[1:-1],
        False,
    ),
    "NDJSON cut short": (_events(200, True)[:-3], True),
    "NDJSON with a bad event, then cut short": (
        _events(100, True) + b'\n{"timestamp":1,"x":-1}\n' + _events(200, True, 100)[:-3],
        True,
    ),
    "NDJSON with an event over two lines, then cut short": (
        b'{"timestamp":1,\n"a":1}\n' + _events(200, True)[:-3],
        True,
    ),
    "NDJSON whose second line is bad, with more after it": (
        _events(1, True) + b"\n{]\n" + _events(200, True, 1),
        True,
    ),
}


@pytest.mark.parametrize("case", _MALFORMED)
def test_a_malformed_batch_in_slices_is_refused_as_it_is_whole(case: str) -> None:
    body, ndjson = _MALFORMED[case]
    with pytest.raises(EventError) as whole:
        decoder.many(body, ndjson)
    parts: list[list[Event]] = []
    with pytest.raises(EventError) as sliced:
        parts.extend(decoder.slices(body, ndjson, size=256))
    got, want = sliced.value, whole.value
    assert (got.message, got.index, got.status) == (want.message, want.index, want.status)
    assert got.__cause__ is None  # explained, not a guard's catch
    if case == "NDJSON cut short":
        # The lines before the error came a slice at a time: the loop had its turns.
        assert len(parts) > 5
        assert sum(map(len, parts)) == 199
        assert "line 200:" in got.message
