"""Progress: one log line every 10 s off a terminal, a rich status line on one."""

from __future__ import annotations

import io
import logging
import time

import pytest

from tests.support.clock import FakeClock
from tophosts.tail.progress import Ack, Progress, TtyProgress, for_stream, size


def test_off_a_terminal_one_line_every_10_s(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tophosts.tail")
    progress = Progress(clock)
    lags = [("/var/log/a.log", 2048), ("/var/log/b.log", 0)]
    progress.tick(lags)
    clock.advance(9.9)
    progress.acked(Ack("/var/log/a.log", 100, 5000, 42, False, clock()), 25_000)
    progress.tick(lags)
    assert caplog.records == []
    clock.advance(0.1)
    progress.tick(lags)
    [record] = caplog.records
    assert record.getMessage() == (
        "2,500 lines/s; lag 2.0 KiB (/var/log/a.log 2.0 KiB, /var/log/b.log 0 B); "
        "last batch /var/log/a.log 100-5000 (42 events) acknowledged 0.1 s ago; "
        "shipped 25,000, bad 0, refused 0"
    )
    clock.advance(5)
    progress.tick(lags)
    assert len(caplog.records) == 1


def test_before_any_batch(clock: FakeClock) -> None:
    progress = Progress(clock)
    progress.bad, progress.refused = 3, 1
    assert (
        progress.line()
        == "0 lines/s; lag 0 B; no batch acknowledged yet; shipped 0, bad 3, refused 1"
    )


def test_sizes() -> None:
    assert [size(n) for n in (0, 1023, 1024, 5 * 2**20, 3 * 2**30, 2**45)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 MiB",
        "3.0 GiB",
        "32768.0 GiB",
    ]


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_stream_decides() -> None:
    assert type(for_stream(time.monotonic, io.StringIO())) is Progress
    assert type(for_stream(time.monotonic, FakeTty())) is TtyProgress


def test_on_a_terminal_a_status_line_with_the_logs_above_it(clock: FakeClock) -> None:
    stream = FakeTty()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    progress = TtyProgress(clock, stream)
    try:
        progress.start()
        progress.acked(Ack("/var/log/a.log", 0, 10, 1, True, clock()), 7)
        progress.tick([("/var/log/a.log", 0)])
        logging.getLogger("tophosts.tail").warning("something to say")
        deadline = time.monotonic() + 5
        while "lines/s" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        progress.stop()
        root.removeHandler(handler)
    out = stream.getvalue()
    # One line, cut to the terminal's width rather than wrapped.
    assert "lines/s; lag 0 B (/var/log/a.log 0 B); last batch /var/log/a.log 0-10" in out
    assert "something to say\n" in out  # printed through the console, above the line
    assert handler.stream is stream  # given back
