"""Fuzz the TCP framing (``Framer``): the same frames, error and rest whatever the chunking.

The input's first bytes choose where the stream is cut; the rest is the stream.
Feeding it in those chunks must give exactly what feeding it whole gives, and
no frame may pass the 64 KiB limit. Anything raised is a crasher: the framer
reports problems in ``Framer.error``, never by raising.
"""

from __future__ import annotations

from tophosts.syslog.framing import MAX_FRAME, Framer

# Small frames so the fuzzer reaches the limit with short inputs.
LIMIT = 64


def _frames(chunks: list[bytes], limit: int) -> tuple[list[bytes], str | None, bytes]:
    framer = Framer(limit)
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    reason = framer.error.reason if framer.error is not None else None
    return frames, reason, framer.close()


def TestOneInput(data: bytes) -> None:
    cuts, stream = data[:4], data[4:]
    chunks, last = [], 0
    for cut in sorted(cuts):
        position = min(cut, len(stream))
        chunks.append(stream[last:position])
        last = position
    chunks.append(stream[last:])
    for limit in (LIMIT, MAX_FRAME):
        whole = _frames([stream], limit)
        chunked = _frames(chunks, limit)
        assert chunked == whole, (chunks, whole, chunked)
        assert all(len(frame) <= limit for frame in whole[0])
        assert whole[1] in (None, "garbage", "frame_too_large")
