"""Bearer tokens for ingest and for reading.

Several tokens may be configured at once, so that a new one can be rolled out
before the old one is withdrawn. Every configured token is compared, in
constant time, so the answer's timing says nothing about which one was close.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from tophosts.asgi import Receive, Scope, Send, send_json

CHALLENGE = [(b"www-authenticate", b'Bearer realm="tophosts"')]


def parse_tokens(text: str) -> list[str]:
    """Tokens from a comma- or newline-separated list, blanks dropped."""
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


class Tokens:
    def __init__(self, tokens: Iterable[str], what: str) -> None:
        self._tokens = [t.encode() for t in tokens]
        self.what = what
        if not self._tokens:
            raise ValueError("at least one token is needed")

    def allows(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, presented = bytes(value).partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                presented = presented.strip()
                ok = False
                for token in self._tokens:
                    ok |= hmac.compare_digest(presented, token)
                return ok
        return False

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The 401 answer, as an ASGI app."""
        await send_json(
            send,
            401,
            {
                "error": f"{self.what} needs a token: send the header "
                "'Authorization: Bearer <token>' with a configured token"
            },
            CHALLENGE,
        )
