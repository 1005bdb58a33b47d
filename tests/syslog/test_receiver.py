"""The syslog receiver in process, on a fake clock, against both stores."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import Callable, Sequence

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.clock import T0, FakeClock
from tests.support.servers import free_port
from tophosts.events import Event
from tophosts.idempotency import Keyed
from tophosts.store import Added, Sizes, Store, StoreUnavailable, TopHosts, WriteUncertain
from tophosts.syslog.aggregate import Pending
from tophosts.syslog.counts import Tally
from tophosts.syslog.receiver import Receiver
from tophosts.syslog.udp import BATCH
from tophosts.windows import Window, past

pytestmark = pytest.mark.anyio

MakeStore = Callable[..., Store]
PAST_MINUTE = past(T0, Window.MINUTE).start


def nginx(host: str | bytes, ts: float = PAST_MINUTE + 5) -> bytes:
    raw = host.encode() if isinstance(host, str) else host
    return b"<190>Dec  1 13:55:32 vm nginx: %.3f %s 200" % (ts, raw)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        await asyncio.sleep(0.01)


def received(tally: Tally) -> int:
    return sum(tally.lines.values())


def udp_sender(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_udp_lines_count_per_host(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    port = free_port()
    registry = CollectorRegistry()
    async with Receiver(f"udp://127.0.0.1:{port}", store, clock, registry=registry) as receiver:
        sender = udp_sender(port)
        for host, n in (("a.com", 7), ("b.com", 5), ("c.com", 2)):
            for _ in range(n):
                sender.send(nginx(host))
        tally = receiver.tallies[0]
        await until(lambda: tally.lines["accepted"] == 14)
        assert await store.top(Window.MINUTE, 10) == [("a.com", 7), ("b.com", 5), ("c.com", 2)]
        assert await store.top(Window.HOUR, 10) == []  # the past hour is 21:00-22:00
        exposition = generate_latest(registry).decode()
    name = f"udp://127.0.0.1:{port}"
    assert f'tophosts_syslog_lines_total{{listener="{name}",result="accepted"}} 14.0' in exposition
    assert f'tophosts_syslog_dropped_total{{listener="{name}"}} 0.0' in exposition
    assert f'tophosts_syslog_receive_buffer_bytes{{listener="{name}"}}' in exposition
    assert "tophosts_syslog" not in generate_latest(registry).decode()  # unregistered on exit


async def test_tcp_newline_and_octet_counted_connections(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    port = free_port()
    async with Receiver(f"tcp://127.0.0.1:{port}", store, clock) as receiver:
        _, plain = await asyncio.open_connection("127.0.0.1", port)
        plain.write(b"".join(nginx("a.com") + b"\r\n" for _ in range(3)))
        _, counted = await asyncio.open_connection("127.0.0.1", port)
        frame = nginx("b.com")
        counted.write(b"%d %s" % (len(frame), frame) * 4)
        await plain.drain()
        await counted.drain()
        tally = receiver.tallies[0]
        await until(lambda: tally.lines["accepted"] == 7)
        assert tally.connections == 2
        assert await store.top(Window.MINUTE, 10) == [("b.com", 4), ("a.com", 3)]
        plain.close()
        counted.close()
        await until(lambda: tally.connections == 0)
    assert tally.closed == {}  # closed by the senders, not by the receiver


async def test_each_line_lands_in_one_result_with_its_reason(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(max_skew=300)
    port = free_port()
    lines = {
        nginx("ok.com"): "accepted",
        nginx("old.com", T0 - 2 * 3600): "expired",
        nginx("future.com", T0 + 301): "refused",
        nginx(b"nul\x00.com"): "refused",
        nginx(b"\xff.com"): "refused",
        nginx("x" * 256): "refused",
        b"<190>Dec  1 13:55:32 vm nginx: soon a.com": "unparsed",
        # Read by the fast path, refused at flush: past 2^53 - 1.
        b"<190>Dec  1 13:55:32 vm nginx: 9999999999999999 a.com": "unparsed",
        b"<999>x": "unparsed",
        b"garbage": "unparsed",
    }
    async with Receiver(f"udp://127.0.0.1:{port}", store, clock) as receiver:
        sender = udp_sender(port)
        for line in lines:
            sender.send(line)
        tally = receiver.tallies[0]
        await until(lambda: received(tally) == len(lines))
    assert tally.lines == {"accepted": 1, "expired": 1, "refused": 4, "unparsed": 4}
    assert tally.reasons == {
        "too_far_ahead": 1,
        "host": 2,
        "host_utf8": 1,
        "timestamp": 2,
        "header": 1,
        "no_host": 1,
    }
    assert await store.top(Window.MINUTE, 10) == [("ok.com", 1)]


async def test_the_same_second_spelled_two_ways_is_one_event(clock: FakeClock) -> None:
    store = FlakyStore([])
    port = free_port()
    async with Receiver(f"udp://127.0.0.1:{port}", store, clock, interval=3600) as receiver:
        sender = udp_sender(port)
        sender.send(b"<13>x: %d.5 a.com" % PAST_MINUTE)  # the fast path: digits
        sender.send(b"<13>x: 000%d a.com" % PAST_MINUTE)
        sender.send(b"<13>1 - - x - - - %d a.com" % PAST_MINUTE)  # RFC 5424: an int
        await until(lambda: receiver.pendings[0].lines() == 3)
    assert store.events == [(PAST_MINUTE, {"a.com": 3})]


async def test_one_refused_host_never_refuses_another(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store(max_tracked_hosts=2)
    port = free_port()
    async with Receiver(f"udp://127.0.0.1:{port}", store, clock) as receiver:
        sender = udp_sender(port)
        tally = receiver.tallies[0]
        for host in ("a.com", "b.com"):
            sender.send(nginx(host))
        await until(lambda: tally.lines["accepted"] == 2)
        # In one flush: a third host (refused) beside the two known ones.
        for host in ("a.com", "c.com", "b.com", "a.com"):
            sender.send(nginx(host))
        await until(lambda: received(tally) == 6)
    assert tally.lines["accepted"] == 5
    assert tally.lines["refused"] == 1
    assert tally.reasons == {"max_tracked_hosts": 1}
    assert await store.top(Window.MINUTE, 10) == [("a.com", 3), ("b.com", 2)]


async def test_leaving_flushes_what_was_received(make_store: MakeStore, clock: FakeClock) -> None:
    store = make_store()
    port, tcp_port = free_port(), free_port()
    listeners = f"udp://127.0.0.1:{port},tcp://127.0.0.1:{tcp_port}"
    # A flush interval far longer than the test: only the final flush applies.
    async with Receiver(listeners, store, clock, interval=3600) as receiver:
        sender = udp_sender(port)
        for _ in range(50):
            sender.send(nginx("a.com"))
        _, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        writer.write(nginx("b.com") + b"\n" + nginx("b.com") + b"\n")
        await writer.drain()
        await until(lambda: receiver.pendings[1].lines() == 2)
        assert await store.top(Window.MINUTE, 10) == []
    assert await store.top(Window.MINUTE, 10) == [("a.com", 50), ("b.com", 2)]
    assert receiver.tallies[0].lines["accepted"] == 50
    assert receiver.tallies[1].lines["accepted"] == 2
    writer.close()


async def test_tcp_connections_that_break_the_framing_are_closed(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    port = free_port()
    async with Receiver(f"tcp://127.0.0.1:{port}", store, clock, idle_timeout=0.3) as receiver:
        tally = receiver.tallies[0]

        writers = []

        async def send(data: bytes) -> asyncio.StreamReader:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)  # kept open: only the receiver closes these
            writer.write(data)
            await writer.drain()
            return reader

        # Each of these is closed by the receiver: reading gets EOF (or a reset).
        garbage = await send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        too_large = await send(nginx("a.com") + b"\n" + b"<13>" + b"x" * 70_000)
        counted_too_large = await send(b"70000 <13>")
        idle = await send(nginx("b.com") + b"\n")
        for reader in (garbage, too_large, counted_too_large, idle):
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), 5) == b""
        await until(lambda: tally.connections == 0)
        # A sender that disconnects in the middle of a frame.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(nginx("c.com") + b"\n" + nginx("c.com")[:20])
        await writer.drain()
        writer.close()
        await until(lambda: tally.reasons.get("truncated") == 1)
        await until(lambda: tally.lines["accepted"] == 3)
    assert tally.closed == {"garbage": 1, "frame_too_large": 2, "idle": 1}
    assert tally.lines == {"accepted": 3, "expired": 0, "refused": 0, "unparsed": 4}
    assert tally.reasons == {"garbage": 1, "frame_too_large": 2, "truncated": 1}
    assert await store.top(Window.MINUTE, 10) == [("a.com", 1), ("b.com", 1), ("c.com", 1)]


async def test_a_full_table_refuses_new_udp_pairs_and_slows_tcp(
    make_store: MakeStore, clock: FakeClock
) -> None:
    store = make_store()
    udp, tcp = free_port(), free_port()
    listeners = f"udp://127.0.0.1:{udp},tcp://127.0.0.1:{tcp}"
    async with Receiver(listeners, store, clock, interval=3600, max_pending=3) as receiver:
        sender = udp_sender(udp)
        for host in ("a", "b", "c", "d", "a", "e"):
            sender.send(nginx(host))
        udp_tally = receiver.tallies[0]
        await until(lambda: received(udp_tally) + receiver.pendings[0].lines() == 6)
        # A TCP sender is never refused: its connection waits for the flush.
        _, writer = await asyncio.open_connection("127.0.0.1", tcp)
        writer.write(b"".join(nginx(f"h{i}") + b"\n" for i in range(10)))
        await writer.drain()
        await until(lambda: sum(p.lines["accepted"] for p in receiver.tallies) >= 4 + 10)
        writer.close()
    assert udp_tally.lines == {"accepted": 4, "expired": 0, "refused": 2, "unparsed": 0}
    assert udp_tally.reasons == {"pending_full": 2}
    assert receiver.tallies[1].lines["accepted"] == 10
    assert receiver.tallies[1].lines["refused"] == 0


async def test_a_flood_is_read_a_bounded_batch_per_turn_of_the_loop(
    make_store: MakeStore, clock: FakeClock
) -> None:
    port = free_port()
    lines = 2000
    async with Receiver(f"udp://127.0.0.1:{port}", make_store(), clock, interval=3600) as receiver:
        tally, pending = receiver.tallies[0], receiver.pendings[0]
        sender = udp_sender(port)
        for i in range(lines):
            sender.send(nginx(f"h{i % 7}.com"))  # all queued before the loop turns again
        loop = asyncio.get_running_loop()
        seen: list[int] = []

        def tick() -> None:  # once per turn of the loop, until every line is in
            seen.append(received(tally) + pending.lines())
            if seen[-1] < lines:
                loop.call_soon(tick)

        tick()
        await until(lambda: seen[-1] == lines)
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert max(steps) <= BATCH, steps
    assert len(steps) >= lines // BATCH
    assert tally.lines["accepted"] == lines


def test_at_the_bound_lines_of_new_seconds_leave_nothing_behind() -> None:
    # A sender of ever new seconds must not grow the table past its bound either.
    tally = Tally("udp://test")
    pending = Pending(tally, limit=2)
    seconds = [b"%d" % (PAST_MINUTE + i) for i in range(50)]
    pending.add_reads([(seconds, [b"a.com"] * 50)])
    for i in range(50, 100):
        pending.add_one(PAST_MINUTE + i, b"b.com")
    pending.add_reads([(b"%d" % (PAST_MINUTE + 200), [b"c.com", b"d.com"])])
    assert pending.lines() == 2
    assert len(pending.table) == 2
    assert tally.lines["refused"] == 100
    assert tally.reasons == {"pending_full": 100}


class FlakyStore:
    """A store that is unavailable, or uncertain, for the first calls it is told to be."""

    kind = "flaky"
    sync = None
    snapshots = None
    history = None

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.events: list[Event] = []

    async def add(self, events: Sequence[Event], key: Keyed | None = None) -> Added:
        if self.failures:
            raise self.failures.pop(0)
        self.events.extend(events)
        return Added(len(events), 0)

    def begin(self, digest: bytes) -> None:
        return None

    async def claim(self, digest: bytes) -> None:
        return None

    def end(self, digest: bytes) -> None:
        return None

    async def top(self, window: Window, limit: int, now: float | None = None) -> TopHosts:
        return []

    async def sizes(self) -> Sizes:
        return Sizes(0, 0, 0)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_an_unavailable_store_gets_the_lines_again(clock: FakeClock) -> None:
    store = FlakyStore([StoreUnavailable("down"), StoreUnavailable("down")])
    port = free_port()
    async with Receiver(f"udp://127.0.0.1:{port}", store, clock, interval=0.02) as receiver:
        sender = udp_sender(port)
        for _ in range(3):
            sender.send(nginx("a.com"))
        tally = receiver.tallies[0]
        await until(lambda: tally.lines["accepted"] == 3)
    assert store.events == [(PAST_MINUTE + 5, {"a.com": 3})]
    assert tally.lines["refused"] == 0


async def test_an_uncertain_write_is_counted_once_as_refused(clock: FakeClock) -> None:
    store = FlakyStore([WriteUncertain("lost reply")])
    port = free_port()
    async with Receiver(f"udp://127.0.0.1:{port}", store, clock) as receiver:
        sender = udp_sender(port)
        sender.send(nginx("a.com"))
        tally = receiver.tallies[0]
        await until(lambda: received(tally) == 1)
    assert store.events == []
    assert tally.reasons == {"write_uncertain": 1}


async def test_a_store_still_down_at_shutdown_refuses_what_is_left(clock: FakeClock) -> None:
    store = FlakyStore([StoreUnavailable("down")] * 3)
    port = free_port()
    async with Receiver(f"udp://127.0.0.1:{port}", store, clock, interval=3600) as receiver:
        udp_sender(port).send(nginx("a.com"))
        await until(lambda: receiver.pendings[0].lines() == 1)
    assert receiver.tallies[0].reasons == {"store_unavailable": 1}


async def test_a_port_in_use_says_which_listener(make_store: MakeStore, clock: FakeClock) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on syslog udp://127.0.0.1:{port}"):
            async with Receiver(f"udp://127.0.0.1:{port}", make_store(), clock):
                pass


async def test_a_listener_beyond_loopback_is_warned_about(
    make_store: MakeStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    listeners = f"udp://0.0.0.0:{port},tcp://127.0.0.1:{port}"
    async with Receiver(listeners, make_store(), clock):
        pass
    warned = [r.getMessage() for r in caplog.records if "no authentication" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith(f"syslog udp://0.0.0.0:{port}: syslog has no authentication")
