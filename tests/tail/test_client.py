"""Posting a batch and what each answer means: retries keep the key, refusals settle."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest

from tests.support.clock import FakeClock
from tests.support.ingest_double import IngestDouble
from tests.support.servers import free_port
from tophosts.tail.client import (
    Acked,
    Backoff,
    Client,
    Conflict,
    Fatal,
    Refused,
    Sender,
    Unfinished,
)

BODY = b'[{"timestamp":1700000000,"a.com":2},{"timestamp":1700000000,"b.com":1}]'


@pytest.fixture
def double() -> Iterator[IngestDouble]:
    server = IngestDouble()
    yield server
    server.stop()


class Sleeps:
    """The sender's waits, on a fake clock: recorded, never slept."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


def sender(url: str, clock: FakeClock, **options: object) -> tuple[Sender, Sleeps, list[str]]:
    sleeps = Sleeps(clock)
    answers: list[str] = []
    made = Sender(
        Client(url, timeout=2),
        backoff=Backoff(rng=random.Random(7)),
        clock=clock,
        wait=sleeps,
        nap=sleeps,
        on_answer=answers.append,
        **options,  # type: ignore[arg-type]
    )
    return made, sleeps, answers


def test_a_200_is_acknowledged(double: IngestDouble, clock: FakeClock) -> None:
    send, _, answers = sender(double.url, clock)
    assert send.send(BODY, "k1") == Acked(replayed=False, accepted=2, expired=0)
    assert double.counts == {"a.com": 2, "b.com": 1}
    assert double.requests == [("k1", BODY)]
    assert answers == ["200"]


def test_503_is_retried_with_the_same_key_after_a_growing_backoff(
    double: IngestDouble, clock: FakeClock
) -> None:
    double.faults.extend([("status", 503)] * 4)
    send, sleeps, answers = sender(double.url, clock)
    assert isinstance(send.send(BODY, "k1"), Acked)
    assert double.keys_sent() == ["k1"] * 5
    assert double.counts == {"a.com": 2, "b.com": 1}
    assert answers == ["503"] * 4 + ["200"]
    # Attempt n waits between half and all of 0.1 * 2**(n-1).
    for n, wait in enumerate(sleeps.waits, 1):
        assert 0.05 * 2 ** (n - 1) <= wait <= 0.1 * 2 ** (n - 1)


def test_a_504_is_resolved_by_the_same_key(double: IngestDouble, clock: FakeClock) -> None:
    double.faults.append(("504",))  # applied, then 504
    send, _, answers = sender(double.url, clock)
    assert send.send(BODY, "k1") == Acked(replayed=True, accepted=2, expired=0)
    assert double.counts == {"a.com": 2, "b.com": 1}  # once
    assert answers == ["504", "replayed"]


def test_a_reply_lost_on_the_way_back_is_replayed(double: IngestDouble, clock: FakeClock) -> None:
    double.faults.append(("drop",))
    send, _, answers = sender(double.url, clock)
    assert send.send(BODY, "k1") == Acked(replayed=True, accepted=2, expired=0)
    assert double.counts == {"a.com": 2, "b.com": 1}
    assert answers == ["error", "replayed"]


def test_a_server_that_is_down_is_waited_for(clock: FakeClock) -> None:
    port = free_port()
    send, sleeps, answers = sender(f"http://127.0.0.1:{port}", clock)
    done: list[object] = []
    # Down for the first three tries, then up.
    double: list[IngestDouble] = []

    def wait(seconds: float) -> None:
        sleeps(seconds)
        if len(sleeps.waits) == 3:
            server = IngestDouble()
            double.append(server)
            send.client = Client(server.url, timeout=2)

    send.wait = wait
    done.append(send.send(BODY, "k1"))
    try:
        assert isinstance(done[0], Acked)
        assert answers == ["error"] * 3 + ["200"]
        assert double[0].counts == {"a.com": 2, "b.com": 1}
    finally:
        double[0].stop()


def test_the_backoff_is_capped_and_honours_retry_after() -> None:
    backoff = Backoff(base=0.1, cap=10, rng=random.Random(1))
    assert all(5 <= backoff.delay(n) <= 10 for n in range(8, 200))
    assert backoff.delay(1, retry_after=3) == 3
    delays = {round(backoff.delay(4), 6) for _ in range(50)}
    assert len(delays) > 40  # jittered, not one fixed wait for every shipper


def test_a_refused_event_is_named(double: IngestDouble, clock: FakeClock) -> None:
    double.refuse["b.com"] = True
    send, _, _ = sender(double.url, clock)
    outcome = send.send(BODY, "k1")
    assert isinstance(outcome, Refused)
    assert outcome.index == 1
    assert "ahead of the server clock" in outcome.message
    assert double.counts == {}


def test_401_is_fatal_and_says_what_to_do(clock: FakeClock) -> None:
    server = IngestDouble(token="s3cret-token-0123456789")
    try:
        send, _, _ = sender(server.url, clock)
        outcome = send.send(BODY, "k1")
        assert isinstance(outcome, Fatal)
        assert "refused the ingest token (401" in outcome.message
        assert "--ingest-token-file" in outcome.message
        ok = Sender(Client(server.url, token="s3cret-token-0123456789"))
        assert isinstance(ok.send(BODY, "k1"), Acked)
    finally:
        server.stop()


def test_a_key_reused_for_another_body_is_a_conflict(
    double: IngestDouble, clock: FakeClock
) -> None:
    send, _, _ = sender(double.url, clock)
    assert isinstance(send.send(BODY, "k1"), Acked)
    outcome = send.send(BODY.replace(b"2}", b"3}"), "k1")
    assert isinstance(outcome, Conflict)
    assert "different request" in outcome.message


def test_a_200_that_is_not_tophosts_is_no_acknowledgement(clock: FakeClock) -> None:
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "15")
            self.end_headers()
            self.wfile.write(b"<html>hi</html>")

        def log_message(self, *args: object) -> None:
            pass

    page = http.server.HTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=page.handle_request, daemon=True).start()
    send, _, _ = sender(f"http://127.0.0.1:{page.server_address[1]}", clock)
    try:
        outcome = send.send(BODY, "k1")
    finally:
        page.server_close()
    assert isinstance(outcome, Fatal)
    assert "is --url a tophosts server?" in outcome.message


def test_a_wrong_url_is_fatal(double: IngestDouble, clock: FakeClock) -> None:
    send, _, _ = sender(double.url + "/nothing-here", clock)
    outcome = send.send(BODY, "k1")
    assert isinstance(outcome, Fatal)
    assert "404" in outcome.message
    assert "base URL" in outcome.message


def test_when_stopping_retries_end_at_the_stop_timeout(clock: FakeClock) -> None:
    stopping = threading.Event()
    stopping.set()
    send, sleeps, _ = sender(
        f"http://127.0.0.1:{free_port()}", clock, stopping=stopping, stop_timeout=5.0
    )
    assert send.send(BODY, "k1") == Unfinished()
    assert 4 <= sum(sleeps.waits) <= 5


def test_a_stop_as_an_answer_comes_still_retries_within_the_stop_timeout(
    double: IngestDouble, clock: FakeClock
) -> None:
    stopping = threading.Event()
    double.faults.extend([("status", 503)] * 6)
    send, sleeps, answers = sender(double.url, clock, stopping=stopping, stop_timeout=2.0)
    # The backoff after six 503s is over 3 s, longer than the time left to flush.
    send.backoff = Backoff(base=1.0, rng=random.Random(3))
    real_wait = send.wait

    def wait(seconds: float) -> None:
        if len(sleeps.waits) == 4:
            stopping.set()  # SIGTERM, as the fifth answer comes
        real_wait(seconds)

    send.wait = wait
    assert isinstance(send.send(BODY, "k1"), Acked)
    assert answers == ["503"] * 6 + ["200"]
    assert sum(sleeps.waits[5:]) <= 2.0


def test_a_stop_cuts_a_backoff_short_to_flush_at_once(
    double: IngestDouble, clock: FakeClock
) -> None:
    stopping = threading.Event()
    double.faults.append(("status", 503))
    send, sleeps, answers = sender(double.url, clock, stopping=stopping)

    def wait(seconds: float) -> None:
        stopping.set()  # SIGTERM arrives while waiting: the wait ends now

    send.wait = wait
    assert isinstance(send.send(BODY, "k1"), Acked)
    assert answers == ["503", "200"]
    assert sleeps.waits == []
