"""Fuzz ``Decoder.many(..., ndjson=True)`` (``POST /counters``, ``application/x-ndjson``),
and its slices."""

from __future__ import annotations

from tests.fuzz import reference
from tests.fuzz.decoder_checks import DECODER, MAX_HOSTS, check_slices, run

DICTIONARY = "json.dict"


def TestOneInput(data: bytes) -> None:
    run(
        lambda: DECODER.many(data, ndjson=True),
        data,
        reference.ndjson(data, MAX_HOSTS),
        ndjson=True,
    )
    check_slices(data, ndjson=True)
