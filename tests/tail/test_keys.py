"""The Idempotency-Key of a batch: the same range gives the same key; anything else another."""

from __future__ import annotations

import re

from tophosts.tail.keys import derive

BASE = (2049, 1234567, "0123456789abcdef", 0, 1000, 2000)


def test_the_same_range_gives_the_same_key() -> None:
    assert derive(*BASE) == derive(*BASE) == "tail1-2049-1234567-0123456789abcdef-g0-1000-2000"


def test_every_part_of_the_identity_and_range_changes_the_key() -> None:
    keys = {derive(*BASE)}
    for i in range(len(BASE)):
        changed = list(BASE)
        changed[i] = (changed[i] + "0") if isinstance(changed[i], str) else changed[i] + 1  # type: ignore[operator]
        keys.add(derive(*changed))  # type: ignore[arg-type]
    assert len(keys) == len(BASE) + 1


def test_the_lines_left_out_change_the_key_whatever_their_order() -> None:
    skip = [(1700000000, "a.com"), (1700000001, "b.com")]
    plain = derive(*BASE)
    with_skip = derive(*BASE, skip=skip)
    assert with_skip != plain
    assert with_skip.startswith(plain + "-s")
    assert derive(*BASE, skip=skip[::-1]) == with_skip
    assert derive(*BASE, skip=skip[:1]) != with_skip


def test_keys_are_what_issue_13_accepts() -> None:
    big = (2**64 - 1, 2**64 - 1, "f" * 16, 10**6, 2**62, 2**63)
    for key in (derive(*big, skip=[(1, "h" * 255)]), derive(*BASE)):
        assert re.fullmatch(r"[\x21-\x7e]{1,255}", key), key
