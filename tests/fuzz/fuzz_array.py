"""Fuzz ``Decoder.many`` on a JSON array (``POST /counters``), and its slices."""

from __future__ import annotations

from tests.fuzz import reference
from tests.fuzz.decoder_checks import DECODER, MAX_HOSTS, check_slices, run

DICTIONARY = "json.dict"


def TestOneInput(data: bytes) -> None:
    run(lambda: DECODER.many(data), data, reference.array(data, MAX_HOSTS))
    check_slices(data)
