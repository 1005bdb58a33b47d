"""The shipper in process, against a double of the server that keeps issue 13's contract:
every line counted exactly once through restarts, crashes, outages, refusals and rotation."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ingest_double import IngestDouble
from tests.support.wait import until
from tophosts.tail import state
from tophosts.tail.client import Client, Outcome, Sender
from tophosts.tail.settings import TailSettings
from tophosts.tail.shipper import Shipper

T = 1_700_000_000


class Running:
    """A shipper's ``run()`` in a thread, stopped as SIGTERM would."""

    def __init__(self, shipper: Shipper) -> None:
        self.shipper = shipper
        self.rc: list[int | BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.rc.append(self.shipper.run())
        except BaseException as exc:  # a simulated crash
            self.rc.append(exc)

    def stop(self, timeout: float = 15.0) -> int | BaseException:
        self.shipper.stopping.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the shipper did not stop"
        return self.rc[0]

    def metric(self, name: str, **labels: str) -> float:
        value = self.shipper.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class Site:
    """A log folder, a state file and a double of the server."""

    def __init__(self, tmp: Path, double: IngestDouble) -> None:
        self.dir = tmp
        self.log = tmp / "access.log"
        self.log.touch()
        self.state = tmp / "tail.state"
        self.double = double
        self.written: Counter[str] = Counter()
        self.lines = 0

    def settings(self, **options: Any) -> TailSettings:
        values: dict[str, Any] = {
            "paths": (str(self.log),),
            "format": "tophosts",
            "url": self.double.url,
            "state": str(self.state),
            "from_start": True,
            "interval": 0.05,
            "rotate_wait": 0.3,
            "stop_timeout": 2.0,
            "timeout": 10.0,
        }
        values.update(options)
        return TailSettings(**values)

    def start(self, **options: Any) -> Running:
        return Running(Shipper(self.settings(**options), poll_every=0.02))

    def write(
        self, n: int, hosts: tuple[str, ...] = ("a.com", "b.com", "c.com"), **kw: Any
    ) -> None:
        self.append(self.log, n, hosts, **kw)

    def append(
        self,
        path: Path,
        n: int,
        hosts: tuple[str, ...] = ("a.com", "b.com", "c.com"),
        second: int = T,
    ) -> None:
        with path.open("a") as out:
            for i in range(n):
                host = hosts[i % len(hosts)]
                self.lines += 1  # each line differs, as a server's do ($msec)
                out.write(f"{second + i % 7}.{self.lines % 1000:03d} {host} {self.lines}\n")
                self.written[host] += 1

    def shipped(self) -> bool:
        return self.double.totals() == self.written

    def wait_shipped(self, timeout: float = 10.0) -> None:
        until(self.shipped, timeout, f"{self.written}")

    def saved(self) -> state.State:
        loaded = state.load(self.state)
        assert loaded is not None
        return loaded


@pytest.fixture
def double() -> Iterator[IngestDouble]:
    server = IngestDouble()
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path: Path, double: IngestDouble) -> Site:
    return Site(tmp_path, double)


def test_lines_written_in_pieces_are_each_counted_once(site: Site) -> None:
    running = site.start()
    site.write(500)
    with site.log.open("a") as out:  # a line written in two parts waits for its newline
        out.write(f"{T}.5 half")
        out.flush()
        time.sleep(0.2)
        out.write(".com\n")
    site.written["half.com"] += 1
    site.write(500)
    site.wait_shipped()
    assert running.stop() == 0
    [saved] = site.saved().files
    assert (saved.offset, saved.pending) == (site.log.stat().st_size, None)
    assert running.metric("tophosts_tail_lines_total", result="shipped") == 1001
    assert running.metric("tophosts_tail_lag_bytes", path=str(site.log)) == 0


def test_a_restart_resumes_where_it_stopped(site: Site) -> None:
    site.write(100)
    running = site.start()
    site.wait_shipped()
    assert running.stop() == 0
    site.write(50)
    running = site.start(from_start=True)  # a known file resumes, whatever the flags
    site.wait_shipped()
    assert running.stop() == 0
    assert sum(site.double.counts.values()) == 150


class Crash(BaseException):
    """Stands in for kill -9: the process is gone, with nothing cleaned up."""


class CrashAfterPost(Sender):
    def send(self, body: bytes, key: str) -> Outcome:
        self.client.post(body, key)  # the server applies it...
        raise Crash  # ...and the shipper dies before it records the answer


def test_a_crash_after_the_post_is_resent_with_the_same_key_and_replayed(site: Site) -> None:
    site.write(300)
    shipper = Shipper(site.settings(), poll_every=0.02)
    shipper.sender = CrashAfterPost(Client(site.double.url))
    crashed = Running(shipper)
    crashed.thread.join(10)
    assert isinstance(crashed.rc[0], Crash)
    assert site.shipped()  # applied once already
    [entry] = site.saved().files
    assert entry.pending is not None
    key = entry.pending.key
    assert site.double.keys_sent() == [key]
    running = site.start()
    until(lambda: site.saved().files[0].pending is None)
    site.write(30)
    site.wait_shipped()
    assert running.stop() == 0
    sent = site.double.keys_sent()
    assert sent[:2] == [key, key]  # re-sent first, with its key: a replay
    assert len(sent) == 3


def test_an_outage_is_waited_out_with_one_key(site: Site) -> None:
    site.double.faults.extend([("status", 503)] * 5 + [("504",)])
    site.write(90)
    running = site.start()
    site.wait_shipped()
    assert running.stop() == 0
    assert len(set(site.double.keys_sent())) == 1
    assert running.metric("tophosts_tail_batches_total", status="503") == 5
    assert running.metric("tophosts_tail_batches_total", status="504") == 1
    assert running.metric("tophosts_tail_batches_total", status="replayed") == 1


def test_a_refused_line_is_skipped_and_the_rest_of_its_batch_counts(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.double.refuse["bad.example"] = False
    site.write(60, hosts=("a.com", "bad.example", "b.com"))
    running = site.start(interval=0.5)  # one batch
    del site.written["bad.example"]
    site.wait_shipped()
    assert running.stop() == 0
    assert running.metric("tophosts_tail_lines_total", result="refused") == 20
    assert running.metric("tophosts_tail_lines_total", result="shipped") == 40
    message = next(r.getMessage() for r in caplog.records if "refused" in r.getMessage())
    assert "refused 3 line(s)" in message  # those of the refused (second, host)
    assert "host name 'bad.example' is refused" in message
    assert re.search(r"e\.g\. '\d+\.\d{3} bad\.example \d+'$", message)  # the line itself
    keys = site.double.keys_sent()
    assert len(keys) == len(set(keys))  # each retry has its own key, from the same range
    assert all(k.startswith(keys[0]) for k in keys)


def test_lines_ahead_of_the_server_clock_are_skipped_from_their_second_on(site: Site) -> None:
    site.double.refuse["future.com"] = True
    site.append(site.log, 4, hosts=("a.com",), second=T)
    site.append(site.log, 3, hosts=("future.com",), second=T + 10**6)
    site.append(site.log, 2, hosts=("b.com",), second=T + 10**6 + 50)
    running = site.start(interval=0.5)
    site.written -= Counter({"future.com": 3, "b.com": 2})
    until(lambda: running.metric("tophosts_tail_lines_total", result="refused") == 5)
    site.wait_shipped()
    assert running.stop() == 0
    assert len(site.double.requests) == 2  # one refusal skips every later second at once


def test_a_wrong_token_stops_with_one_clear_line(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.double.token = "right-token-0123456789"
    site.write(3)
    running = site.start()
    running.thread.join(10)
    assert running.rc == [1]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "refused the ingest token (401" in errors[0]
    [entry] = site.saved().files
    assert entry.pending is not None  # sent again, with its key, once the token is fixed


def test_batches_hold_at_most_max_batch_events(site: Site) -> None:
    hosts = tuple(f"h{i}.com" for i in range(25_000))
    site.write(25_000, hosts=hosts)
    running = site.start(interval=0.5)
    site.wait_shipped(20)
    assert running.stop() == 0
    sizes = [len(json.loads(body)) for _, body in site.double.requests]
    assert sizes == [10_000, 10_000, 5_000]


def test_sigterm_sends_what_was_read_then_exits_0(site: Site) -> None:
    running = site.start(interval=3600)
    site.write(40)
    until(lambda: running.shipper.watcher.files and running.shipper.watcher.files[0].batch)
    until(lambda: running.shipper.watcher.files[0].position == site.log.stat().st_size)
    assert site.double.requests == []  # not due for an hour
    assert running.stop() == 0
    assert site.shipped()
    assert site.saved().files[0].pending is None


def test_a_stop_while_the_server_is_down_keeps_the_batch_pending(site: Site) -> None:
    site.double.faults.extend([("status", 503)] * 10_000)
    site.write(10)
    running = site.start(stop_timeout=0.5)
    until(lambda: len(site.double.requests) >= 2)
    assert running.stop() == 1
    [entry] = site.saved().files
    assert entry.pending is not None
    site.double.faults.clear()
    running = site.start()
    site.wait_shipped()
    assert running.stop() == 0
    assert set(site.double.keys_sent()) == {entry.pending.key}


def test_rename_rotation_under_writes(site: Site) -> None:
    site.write(1)
    running = site.start()
    until(lambda: running.shipper.watcher.files, what="the log followed")
    site.write(200)  # read, or not yet, when the file is renamed
    rotated = site.dir / "access.log.1"
    os.rename(site.log, rotated)
    site.append(rotated, 50)  # the server writes on until it reopens its log
    site.log.touch()
    site.write(70)
    site.wait_shipped()
    site.append(rotated, 5)  # still followed, by its inode
    site.wait_shipped()
    assert running.stop() == 0


def test_copytruncate_rotation(site: Site) -> None:
    running = site.start()
    site.write(200)
    site.wait_shipped()
    site.write(30)  # read, or not yet: the copy holds them either way
    shutil.copy(site.log, site.dir / "access.log.1")
    os.truncate(site.log, 0)
    site.write(40)
    site.wait_shipped()
    assert running.stop() == 0


def test_a_glob_follows_files_that_appear_later_from_their_start(site: Site) -> None:
    site.write(5)
    running = site.start(paths=(str(site.dir / "*.log"),), from_start=False)
    until(lambda: running.shipper.watcher.files)
    site.written.clear()  # present at the first start: read from the end
    site.write(10)
    site.append(site.dir / "other.log", 20, hosts=("o.com",))
    site.wait_shipped()
    assert running.stop() == 0
    assert site.double.counts == {"a.com": 4, "b.com": 3, "c.com": 3, "o.com": 20}


def test_bad_lines_are_counted_and_one_example_logged(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    with site.log.open("a") as out:
        out.write("garbage\n" * 50)
    site.write(10)
    running = site.start()
    site.wait_shipped()
    assert running.stop() == 0
    assert running.metric("tophosts_tail_lines_total", result="bad") == 50
    reports = [r.getMessage() for r in caplog.records if "not shipped" in r.getMessage()]
    assert len(reports) == 1
    assert "garbage" in reports[0]


def test_a_corrupt_state_stops_start_up(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    site.state.write_text("{not json")
    running = site.start()
    running.thread.join(10)
    assert running.rc == [2]
    assert "corrupt" in caplog.text
    assert site.state.read_text() == "{not json"  # left for the operator


def copytruncate(log: Path) -> None:
    """What logrotate's copytruncate does: rotate the copies, copy, truncate."""
    for n in (2, 1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            os.rename(older, log.with_name(f"{log.name}.{n + 1}"))
    shutil.copy(log, log.with_name(f"{log.name}.1"))
    os.truncate(log, 0)


def test_two_copytruncates_before_a_batch_is_sent_lose_nothing(site: Site) -> None:
    """Step by step, so that each truncation finds lines read but not sent, and lines
    not read at all: the rest of each old content is found in its copy (by the first
    line of the content that was read, not of what replaced it)."""
    shipper = Shipper(site.settings(interval=3600), poll_every=0)
    shipper.watcher.start(None, from_start=True)
    site.write(200)
    shipper.step()  # read, not sent: not due for an hour
    for unread in (20, 35):
        site.write(50)
        shipper.step()
        site.write(unread)  # after the last read
        copytruncate(site.log)
        site.write(30)  # the server writes on, into the truncated file
        shipper.step()  # the truncation: what was read is sent, the rest read from the copy
    shipper.step()  # the new content
    shipper.flush()
    assert site.double.totals() == site.written
    assert sum(site.written.values()) == 200 + 2 * (50 + 30) + 20 + 35
