"""Differential: the memory store and the Redis store, through the HTTP app, agree.

Both apps get the same random sequence of requests on one fake clock: single
events and batches, zero counts, counts near 2^53 - 1, expired and future
events, a --max-tracked-hosts cap, and clock moves across minute and hour
boundaries; requests with idempotency keys from a small pool, so that
replays, conflicts, a full store and expired keys all happen; and history:
/stats?at= and /stats/history over the past, frozen, too old and open
windows, with and without the freezers having run, under a random
--retention and --history-top. Every answer must be identical: status, body
(error texts and "index" included), the Idempotent-Replayed header, and the
window headers of /stats; and so must /stats for both windows at the end, the
whole history, and what the stores hold.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Iterator
from typing import Any

import msgspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.conftest import WIDE_TIMEOUT
from tests.support.clock import FakeClock
from tests.support.slices import small_slices
from tophosts.app import TopHosts, create_app
from tophosts.config import Settings
from tophosts.events import MAX_COUNT
from tophosts.windows import HOUR, MINUTE

SKEW = 300
SIZES = re.compile(
    r'^(tophosts_tracked_hosts\{window="\w+"\}|tophosts_windows_live|tophosts_idempotency_keys)'
    r" (\S+)$",
    re.M,
)
_prefixes = itertools.count()

HOSTS = ["a", "b", "c", "A", "a.com", "é.com", "日本.jp", "x,y", 'q"t']
counts = st.dictionaries(
    st.sampled_from(HOSTS),
    st.one_of(
        st.just(0),
        st.integers(1, 5),
        st.integers(MAX_COUNT - 4, MAX_COUNT),
        st.integers(MAX_COUNT // 2 - 2, MAX_COUNT // 2 + 2),
    ),
    min_size=1,
    max_size=4,
)
# Seconds from the clock's reading at the time of the request: some expired
# (before the past hour), some in the past minute or hour, some ahead, some
# too far ahead.
offsets = st.one_of(
    st.integers(-7300, -3500),
    st.integers(-130, 5),
    st.integers(-3600, 0),
    st.integers(SKEW - 5, SKEW + 5),
)
events = st.tuples(offsets, counts)
# A few keys, so that they come back: with the same request (a replay, if the
# first was applied), or another (422).
keys = st.sampled_from([None, "k0", "k1", "k2", "k3"])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("counter"), events, keys),
        st.tuples(st.just("counters"), st.lists(events, min_size=1, max_size=5), keys),
        # A retry of the last request, with its key (as likely as a new request).
        st.tuples(st.just("retry")),
        st.tuples(st.just("retry")),
        # A move of the clock; "minute"/"hour" go to just before, on, or just
        # after the next boundary.
        st.tuples(
            st.just("advance"), st.sampled_from([1, 7, 59, 60, 61, 120, 600, 3599, 3600, 7200])
        ),
        st.tuples(
            st.just("boundary"), st.sampled_from([MINUTE, HOUR]), st.sampled_from([-1, 0, 0.5])
        ),
        st.tuples(st.just("stats"), st.sampled_from(["minute", "hour"]), st.integers(1, 6)),
        # History: at a window some windows back (-1 is the current one), and a range.
        st.tuples(
            st.just("at"),
            st.sampled_from(["minute", "hour"]),
            st.integers(-1, 100),
            st.integers(1, 6),
        ),
        st.tuples(
            st.just("history"),
            st.sampled_from(["minute", "hour"]),
            st.integers(-2, 100),
            st.integers(0, 120),
            st.integers(1, 6),
        ),
        st.tuples(st.just("freeze")),
    ),
    max_size=30,
)


def body(event: tuple[int, dict[str, int]], now: float) -> dict[str, Any]:
    offset, hosts = event
    return {"timestamp": int(now) + offset, **hosts}


def answer(response: Any, stats: bool = False) -> tuple[Any, ...]:
    got: tuple[Any, ...] = (response.status_code, response.headers["content-type"])
    got += (response.json(), response.headers.get("idempotent-replayed"))
    got += (response.headers.get("retry-after"),)
    if stats:
        got += (response.headers.get("x-window-start"), response.headers.get("x-window-end"))
    return got


@settings(
    max_examples=int(os.environ.get("TOPHOSTS_DIFFERENTIAL_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=steps,
    cap=st.sampled_from([1, 2, 3, 1_000_000]),
    max_keys=st.sampled_from([1, 2, 1_000_000]),
    ttl=st.sampled_from([60, 600, None]),
    retention=st.sampled_from([0, 60, 5400, 86400]),
    history_top=st.sampled_from([1, 2, 3, 100]),
    sliced=st.booleans(),
)
def test_memory_and_redis_answer_every_request_identically(
    redis_url: str,
    steps: list[Any],
    cap: int,
    max_keys: int,
    ttl: int | None,
    retention: int,
    history_top: int,
    sliced: bool,
) -> None:
    clock = FakeClock()
    common: dict[str, Any] = {
        "max_skew": SKEW,
        "max_tracked_hosts": cap,
        "max_idempotency_keys": max_keys,
        "idempotency_ttl": ttl,
        "retention": retention,
        "history_top": history_top,
    }
    memory = Settings(store="memory", **common)
    shared = Settings(
        store=redis_url,
        redis_prefix=f"diff{next(_prefixes)}",
        redis_timeout=WIDE_TIMEOUT,  # a busy machine must not turn a 200 into a 503
        **common,
    )
    # Sliced: every batch decoded and summed 2 events at a time, as a large one is.
    with (
        small_slices(2) if sliced else contextlib.nullcontext(),
        TestClient(create_app(memory, clock=clock), raise_server_exceptions=False) as mem,
        TestClient(create_app(shared, clock=clock), raise_server_exceptions=False) as red,
    ):

        def both(method: str, path: str, **kwargs: Any) -> Iterator[Any]:
            for client in (mem, red):
                yield client.request(method, path, **kwargs)

        last: tuple[str, bytes, dict[str, str]] | None = None
        for step in steps:
            kind = step[0]
            if kind in ("counter", "counters", "retry"):
                if kind == "counter":
                    sent: Any = body(step[1], clock.now)
                elif kind == "counters":
                    sent = [body(event, clock.now) for event in step[1]]
                if kind != "retry":
                    headers = {"idempotency-key": step[2]} if step[2] else {}
                    last = ("/" + kind, msgspec.json.encode(sent), headers)
                if last is not None:
                    path, content, headers = last
                    sent_to = both("POST", path, content=content, headers=headers)
                    got = [answer(r) for r in sent_to]
                    assert got[1] == got[0], (kind, path, content, headers)
                    full = "Idempotency-Keys" in str(got[0][2])
                    event(f"{path} {got[0][0]}{' replayed' if got[0][3] else ''}{' full' * full}")
            elif kind == "advance":
                clock.advance(step[1])
            elif kind == "boundary":
                size, delta = step[1], step[2]
                clock.set(max(clock.now, (clock.now // size + 1) * size + delta))
            elif kind == "freeze":
                for client in (mem, red):
                    app = client.app
                    assert isinstance(app, TopHosts)
                    if app.store.history is not None:
                        client.portal.call(app.freeze)  # type: ignore[union-attr]
            elif kind == "at":
                size = MINUTE if step[1] == "minute" else HOUR
                at = int(clock.now) - (step[2] + 1) * size
                query = {"stats_type": step[1], "at": max(0, at), "limit": step[3]}
                got = [answer(r, True) for r in both("GET", "/stats", params=query)]
                assert got[1] == got[0], (kind, query, clock.now)
                event(f"?at= {got[0][0]}{' with hosts' * bool(got[0][2].get('top_hosts'))}")
            elif kind == "history":
                size = MINUTE if step[1] == "minute" else HOUR
                since = max(0, int(clock.now) - (step[2] + 1) * size + 7)
                query = {"stats_type": step[1], "from": since, "to": since + step[3] * size}
                query["limit"] = step[4]
                got = [answer(r) for r in both("GET", "/stats/history", params=query)]
                assert got[1] == got[0], (kind, query, clock.now)
                hosts = any(w["top_hosts"] for w in got[0][2].get("windows", []))
                event(f"/stats/history {got[0][0]}{' with hosts' * hosts}")
            else:
                query = {"stats_type": step[1], "limit": step[2]}
                got = [answer(r, True) for r in both("GET", "/stats", params=query)]
                assert got[1] == got[0], (kind, query, clock.now)
        for window in ("minute", "hour"):
            query = {"stats_type": window, "limit": 1000}
            got = [answer(r, True) for r in both("GET", "/stats", params=query)]
            assert got[1] == got[0], ("final", window, clock.now)
            # The whole history (as much as one call answers), before and after freezing.
            size = MINUTE if window == "minute" else HOUR
            current = int(clock.now) // size * size
            # The 1,440 windows before the current one (the past one included).
            query = {"stats_type": window, "from": current - 1440 * size, "to": current}
            query["limit"] = min(history_top, 6)
            for _ in range(2):
                got = [answer(r) for r in both("GET", "/stats/history", params=query)]
                assert got[1] == got[0], ("final history", window, clock.now)
                assert got[0][0] == 200, got[0]
                hosts = any(w["top_hosts"] for w in got[0][2]["windows"])
                event(f"final {window} history{' with hosts' * hosts}")
                for client in (mem, red):
                    app = client.app
                    assert isinstance(app, TopHosts)
                    if app.store.history is not None:
                        client.portal.call(app.freeze)  # type: ignore[union-attr]
        # And what they hold: the tracked (host, window) pairs, live windows and keys.
        sizes = [sorted(re.findall(SIZES, r.text)) for r in both("GET", "/metrics")]
        assert len(sizes[0]) == 4
        assert sizes[1] == sizes[0], ("sizes", clock.now)
