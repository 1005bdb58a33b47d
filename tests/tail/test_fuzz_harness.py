"""The atheris harness of the line parsers, replayed here over its seeds and random bytes
(the fuzz runner replays and runs it for longer, once it is in the suite)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.fuzz_tail_formats import NAMES, TestOneInput
from tophosts.formats import LOG_FILE_FORMATS

SEEDS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "tail_formats"


def test_every_seed_parses_with_its_format() -> None:
    seeds = sorted(SEEDS.iterdir())
    assert {NAMES[seed.read_bytes()[0]] for seed in seeds} == set(LOG_FILE_FORMATS)
    for seed in seeds:
        data = seed.read_bytes()
        TestOneInput(data)
        if seed.name.endswith("-0"):  # the first seed of each format is a real line
            LOG_FILE_FORMATS[NAMES[data[0]]](data[1:])


@given(st.binary(max_size=600))
def test_random_lines_give_only_a_result_or_the_parsers_error(data: bytes) -> None:
    TestOneInput(data)
