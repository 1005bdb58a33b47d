"""Small slices: a batch of a few events taken a slice at a time, as a large one is."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from unittest import mock

_LIMITS = {"AT_ONCE_BYTES": 0, "AT_ONCE_HOSTS": 0}
_SLICES = ("SLICE_BYTES", "SLICE_HOSTS")


@contextlib.contextmanager
def small_slices(budget: int = 2) -> Iterator[None]:
    """Every batch of two events or more decoded and summed a slice at a time, slices of
    ``budget`` bytes of body and ``budget`` host counts (an event at least): the
    limits patched in every module that reads them."""
    import tophosts.ingest  # noqa: F401  # loaded, so that it is patched too

    with contextlib.ExitStack() as stack:
        for name, module in list(sys.modules.items()):
            if not name.startswith("tophosts"):
                continue
            for limit, value in [*_LIMITS.items(), *((s, budget) for s in _SLICES)]:
                if hasattr(module, limit):
                    stack.enter_context(mock.patch.object(module, limit, value))
        yield
