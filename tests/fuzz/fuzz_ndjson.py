"""Fuzz ``Decoder.many(..., ndjson=True)`` (``POST /counters``, ``application/x-ndjson``)."""

from __future__ import annotations

from tests.fuzz import reference
from tests.fuzz.decoder_checks import DECODER, MAX_HOSTS, run

DICTIONARY = "json.dict"


def TestOneInput(data: bytes) -> None:
    run(
        lambda: DECODER.many(data, ndjson=True),
        data,
        reference.ndjson(data, MAX_HOSTS),
        ndjson=True,
    )
