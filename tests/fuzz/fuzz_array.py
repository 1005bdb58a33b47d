"""Fuzz ``Decoder.many`` on a JSON array (``POST /counters``)."""

from __future__ import annotations

from tests.fuzz import reference
from tests.fuzz.decoder_checks import DECODER, MAX_HOSTS, run

DICTIONARY = "json.dict"


def TestOneInput(data: bytes) -> None:
    run(lambda: DECODER.many(data), data, reference.array(data, MAX_HOSTS))
