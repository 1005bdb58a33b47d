"""The access-log formats: a body in, (second, host) out, or a FormatError with a reason."""

from __future__ import annotations

import pytest

from tophosts.events import MAX_COUNT
from tophosts.formats import FORMATS, FormatError, caddy, guess, text


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"1796133332.584 shop.example.com", (1796133332, b"shop.example.com")),
        (b"1796133332.584 shop.example.com 200", (1796133332, b"shop.example.com")),
        (b"1796133332 a.com", (1796133332, b"a.com")),  # Apache's %{sec}t
        (b"1796133332. a.com", (1796133332, b"a.com")),
        (b"0 a.com", (0, b"a.com")),
        (b" 1796133332.584  a.com\t200", (1796133332, b"a.com")),  # rsyslog's leading space
        (b"1796133332.999 API.Example:8443", (1796133332, b"API.Example:8443")),
        (b"1796133332.5 \xc3\xa9t\xc3\xa9.fr", (1796133332, "été.fr".encode())),
        (f"{MAX_COUNT} a.com".encode(), (MAX_COUNT, b"a.com")),
    ],
)
def test_text_reads_seconds_and_host(body: bytes, expected: tuple[int, bytes]) -> None:
    assert text(body) == expected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "no_host"),
        (b"1796133332.584", "no_host"),
        (b"1796133332.584 ", "no_host"),
        (b"1796133332.584 -", "no_host"),
        (b"abc a.com", "timestamp"),
        (b"-1 a.com", "timestamp"),
        (b"+1 a.com", "timestamp"),
        (b"1_000 a.com", "timestamp"),
        (b"1.5.5 a.com", "timestamp"),
        (b"1.x a.com", "timestamp"),
        (f"{MAX_COUNT + 1} a.com".encode(), "timestamp"),
        (b"9" * 5000 + b" a.com", "timestamp"),
        (b"\xd9\xa3 a.com", "timestamp"),  # not ASCII digits
    ],
)
def test_text_refuses_what_is_not_seconds_and_host(body: bytes, reason: str) -> None:
    with pytest.raises(FormatError) as caught:
        text(body)
    assert caught.value.reason == reason
    assert caught.value.detail


CADDY = (
    b'{"level":"info","ts":1796133332.5843,"logger":"http.log.access.log0",'
    b'"msg":"handled request","request":{"remote_ip":"127.0.0.1","proto":"HTTP/1.1",'
    b'"method":"GET","host":"shop.example.com","uri":"/","headers":{}},"status":200}'
)


def test_caddy_reads_ts_and_request_host() -> None:
    assert caddy(CADDY) == (1796133332, b"shop.example.com")
    assert caddy(b'{"ts": 5, "request": {"host": "\\u00e9.fr"}}') == (5, "é.fr".encode())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "json"),
        (b"{", "json"),
        (b"[]", "json"),
        (b'{"ts": 1}', "json"),
        (b'{"ts": "2026-12-01T00:00:00Z", "request": {"host": "a"}}', "json"),
        (b'{"ts": 1, "request": {"host": 5}}', "json"),
        (b'{"ts": -1, "request": {"host": "a"}}', "timestamp"),
        (b'{"ts": 1e300, "request": {"host": "a"}}', "timestamp"),
        (b'{"ts": 1, "request": {"host": ""}}', "no_host"),
        (b"[" * 100_000, "json"),
    ],
)
def test_caddy_refuses_other_json(body: bytes, reason: str) -> None:
    with pytest.raises(FormatError) as caught:
        caddy(body)
    assert caught.value.reason == reason


def test_a_lone_surrogate_is_not_json_text() -> None:
    with pytest.raises(FormatError) as caught:
        caddy(b'{"ts": 1, "request": {"host": "\\ud800"}}')
    assert caught.value.reason == "json"


def test_the_registry_names_each_server() -> None:
    assert FORMATS["nginx"] is FORMATS["haproxy"] is FORMATS["apache"] is text
    assert FORMATS["caddy"] is caddy
    assert guess(CADDY) is caddy
    assert guess(b"1 a.com") is text
