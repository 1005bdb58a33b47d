"""The shared store: one Redis (or Valkey) sorted set per window.

Any number of tophosts processes can share one Redis and give the same answers
as the memory store (:mod:`tophosts.store.memory`, the reference semantics).

- :mod:`~tophosts.store.redis.keys`: the key layout and each key's lifetime;
- ``scripts/*.lua``: the server-side scripts, each with its keys and arguments
  described at its top;
- :mod:`~tophosts.store.redis.connection`: a pool per event loop, and every
  failure mapped to StoreUnavailable;
- :mod:`~tophosts.store.redis.commit`: the group commit of concurrent writes;
- :mod:`~tophosts.store.redis.settle`: what a write that got no reply did;
- :mod:`~tophosts.store.redis.clock`: where the Redis clock stands;
- :mod:`~tophosts.store.redis.store`: the Store protocol on top.

Exactness
    Scores are doubles: integers are exact up to 2**53 - 1, which is why counts
    are capped there. The scripts refuse a request that would take a total
    past the cap before adding anything of it, so nothing ever silently loses
    precision. Counts travel as decimal strings, never as Lua numbers.

Failure
    Every call is bounded by the timeout; a down, unreachable or slow Redis
    raises StoreUnavailable (the app answers 503 + Retry-After). A 503 must
    mean nothing was applied, so the ingest script carries a deadline on the
    Redis clock: a call that Redis only gets to after the client may have
    given up changes nothing. A call that was sent and got no reply is settled
    before it is answered: applied, not applied (503), or, if Redis does not
    say within another timeout, unknown (WriteUncertain, a 504). An error
    reply, -LOADING included, means nothing ran: 503. No write is retried
    behind the caller's back.
"""

from tophosts.store.redis.connection import describe
from tophosts.store.redis.store import RedisStore

__all__ = ["RedisStore", "describe"]
