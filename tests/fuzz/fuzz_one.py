"""Fuzz ``Decoder.one`` (``POST /counter``): success or EventError, as the reference says."""

from __future__ import annotations

from tests.fuzz import reference
from tests.fuzz.decoder_checks import DECODER, MAX_HOSTS, run

DICTIONARY = "json.dict"


def TestOneInput(data: bytes) -> None:
    run(lambda: [DECODER.one(data)], data, reference.one(data, MAX_HOSTS))
