"""Small slices: a batch of a few events taken a slice at a time, as a large one is."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from unittest import mock


@contextlib.contextmanager
def small_slices(events: int = 2) -> Iterator[None]:
    """``SLICE_EVENTS`` at ``events`` in every module that reads it, and every batch body
    decoded in slices (``tophosts.ingest._SLICED_BYTES`` at 0)."""
    import tophosts.ingest  # noqa: F401  # loaded, so that it is patched too

    with contextlib.ExitStack() as stack:
        for name, module in list(sys.modules.items()):
            if name.startswith("tophosts") and hasattr(module, "SLICE_EVENTS"):
                stack.enter_context(mock.patch.object(module, "SLICE_EVENTS", events))
        stack.enter_context(mock.patch("tophosts.ingest._SLICED_BYTES", 0))
        yield
