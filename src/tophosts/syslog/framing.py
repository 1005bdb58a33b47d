"""TCP syslog framing (RFC 6587), sans-io: a byte stream in, whole frames out.

Two framings, told apart by the first byte of a connection and kept for it:

* octet counting, ``MSG-LEN SP SYSLOG-MSG`` (rsyslog's ``TCP_Framing="octet-counted"``):
  the stream starts with a digit;
* newline-delimited (non-transparent framing, what ``logger`` and most senders
  use): the stream starts with ``<`` (a syslog header) or ``{`` (Caddy's JSON).

Anything else is not syslog, and so is an octet count that is not a number.
A frame longer than :data:`MAX_FRAME` (64 KiB) is refused as soon as that is
known, without buffering it: the caller closes the connection.
"""

from __future__ import annotations

MAX_FRAME = 64 * 1024
_DIGITS = len(str(MAX_FRAME))


class FramingError(ValueError):
    """The stream cannot be framed; ``reason`` is ``"garbage"`` or ``"frame_too_large"``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _too_large(size: int | None, limit: int) -> FramingError:
    got = f" of {size} bytes" if size is not None else ""
    return FramingError(
        "frame_too_large",
        f"a frame{got} is over the limit of {limit} bytes; frames are at most 64 KiB",
    )


class Framer:
    """Frames of one TCP connection. Feed it what arrives; it returns the frames completed.

    After a problem, :attr:`error` is set, :meth:`feed` returns the frames that
    came before it, and every later call returns nothing.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.octets: bool | None = None
        """None until the first byte; then whether the connection counts octets."""
        self.error: FramingError | None = None
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None or not data:
            return []
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if self.octets is None:
            first = data[:1]
            if first.isdigit():
                self.octets = True
            elif first in (b"<", b"{"):
                self.octets = False
            else:
                self.error = FramingError(
                    "garbage",
                    "the stream starts with neither a syslog header '<PRI>', an octet "
                    "count (RFC 6587) nor a JSON object",
                )
                return []
        if self.octets:
            return self._counted(data)
        lines = data.split(b"\n")
        rest = lines.pop()
        if len(rest) > self.max_frame or (lines and max(map(len, lines)) > self.max_frame):
            # The frames before the long one still count.
            ok = []
            for line in lines:
                if len(line) > self.max_frame:
                    break
                ok.append(line)
            self.error = _too_large(None, self.max_frame)
            return ok
        self._buf = rest
        return lines

    def _counted(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if data[pos] in b"\r\n":  # a newline between frames: some senders add one
                pos += 1
                continue
            space = data.find(b" ", pos, pos + _DIGITS + 1)
            if space < 0:
                head = data[pos : pos + _DIGITS + 1]
                if not head.isdigit() or head[0] == 0x30:
                    self.error = self._bad_count(head)
                elif len(head) > _DIGITS:
                    self.error = _too_large(None, self.max_frame)
                else:
                    break  # the count is not all here yet
                return frames
            count = data[pos:space]
            if not count.isdigit() or count[0] == 0x30:
                self.error = self._bad_count(count)
                return frames
            size = int(count)
            if size > self.max_frame:
                self.error = _too_large(size, self.max_frame)
                return frames
            start = space + 1
            if start + size > end:
                break
            frames.append(data[start : start + size])
            pos = start + size
        self._buf = data[pos:]
        return frames

    @staticmethod
    def _bad_count(head: bytes) -> FramingError:
        return FramingError(
            "garbage",
            f"an octet-counted frame (RFC 6587) starts with its length and a space, got {head!r}",
        )

    def close(self) -> bytes:
        """At the end of the stream: the incomplete frame left over (``b""`` if none)."""
        rest, self._buf = self._buf, b""
        return rest if self.error is None else b""
