"""The ``Idempotency-Key`` of a batch, derived from what it covers.

A batch is the lines of one byte range of one file. Its key names that file
(device, inode, the checksum of its first line, and the generation: how many
times its content was replaced in place, by copytruncate) and the range (start
and end offsets). The same range of the same file always gets the same key, so
a retry, or a restart that rebuilds the batch from the range, is answered by the
server as a replay instead of being counted again (issue 13's contract). A
batch the server refused a line of is re-sent without that line under a key
that still derives from the range, and from the ``(second, host)`` pairs left
out, so that it too is the same after a restart.

Keys are visible ASCII, well under issue 13's 255 characters.
"""

from __future__ import annotations

import hashlib

import msgspec

PREFIX = "tail1"


def derive(
    dev: int,
    ino: int,
    first_line: str,
    generation: int,
    start: int,
    end: int,
    skip: list[tuple[int, str]] | None = None,
) -> str:
    """``tail1-<dev>-<ino>-<first line>-g<generation>-<start>-<end>[-s<hash of skip>]``."""
    key = f"{PREFIX}-{dev}-{ino}-{first_line}-g{generation}-{start}-{end}"
    if skip:
        digest = hashlib.blake2b(msgspec.json.encode(sorted(skip)), digest_size=8).hexdigest()
        key += f"-s{digest}"
    return key
