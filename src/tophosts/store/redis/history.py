"""History in Redis: frozen windows, and reading the top of any window (top.lua).

Every instance runs :meth:`RedisHistory.freeze` in the background: for each
window that froze since its last run, it calls freeze.lua, which copies the
window's top K into a key of its own once, whoever gets there first, and
deletes the live key. Queries never freeze anything: they ask for the frozen
key and, until it exists, for the live one (top.lua takes the first that
exists), so an answer never depends on whether an instance has frozen the
window yet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from tophosts.store import Clock, StoreUnavailable, TopHosts
from tophosts.store.redis.commit import count
from tophosts.store.redis.connection import Failures, Link
from tophosts.store.redis.keys import LINGER, Keys
from tophosts.windows import HOUR, MINUTE, Window, due, kept_until

log = logging.getLogger("tophosts.store")


def ranked(reply: Sequence[Any]) -> TopHosts:
    """One window's ``{above, tied, cutoff}`` from select.lua, in ``/stats`` order."""
    above = reply[0]
    top = [(above[i].decode(), count(above[i + 1])) for i in range(0, len(above), 2)]
    top.sort(key=_rank)
    if len(reply) > 2:
        cutoff = count(reply[2])
        top.extend((host.decode(), cutoff) for host in reply[1])
    return top


class RedisHistory:
    def __init__(
        self,
        keys: Keys,
        failures: Failures,
        clock: Clock,
        link: Callable[[], Link],
        retention: int,
        history_top: int,
    ) -> None:
        self._keys = keys
        self._failures = failures
        self._clock = clock
        self._link = link
        self.retention = retention
        self.history_top = history_top
        self._done_until: float | None = None  # windows freezing up to then are frozen
        self._failing = False

    async def closed(self, window: Window, starts: Sequence[int], limit: int) -> list[TopHosts]:
        if not starts:
            return []
        link = self._link()
        size, keys = window.value, self._keys
        names: list[str] = []
        for start in starts:
            names.append(keys.frozen(size, start))
            names.append(keys.window(size, start))
        call = link.top(keys=names, args=[limit, 2], client=link.client)
        return [ranked(one) for one in await self._failures.call(call)]

    async def freeze(self) -> None:
        """Freeze every window that froze since the last run (since :data:`LINGER` ago on
        the first: older live keys are gone). Redis being away is logged once; the
        windows are frozen on a later run."""
        now = self._clock()
        since = now - LINGER if self._done_until is None else self._done_until
        # Nothing older than the retention is worth a call (after a long outage, say).
        since = max(since, now - self.retention - 2 * HOUR)
        link = self._link()
        pipe = link.client.pipeline(transaction=False)
        calls = 0
        for size in (MINUTE, HOUR):
            for start in due(size, since, now):
                if now >= kept_until(size, start, self.retention):
                    continue
                keys = [self._keys.window(size, start), self._keys.frozen(size, start)]
                ttl = self._keys.frozen_ttl_ms(size, start, now)
                await link.freeze(keys=keys, args=[self.history_top, ttl], client=pipe)
                calls += 1
        try:
            if calls:
                await self._failures.call(pipe.execute(), self._failures.timeout + calls * 1e-4)
        except StoreUnavailable as exc:
            if not self._failing:
                log.warning("cannot freeze closed windows for now (will retry): %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("freezing closed windows again")
        self._failing = False
        self._done_until = now


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]
