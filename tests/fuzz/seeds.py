"""Write the seed corpora, ``corpus/<name>/``, from the bodies the tests send.

``python -m tests.fuzz.seeds`` rewrites them (names are content hashes, so a
rerun changes nothing unless the test bodies changed). Bodies longer than the
fuzzers' ``--max-len`` are left out; the fuzzer builds deep nesting itself.
"""

from __future__ import annotations

import hashlib
import shutil

import msgspec

from tests.fuzz import CORPUS
from tests.test_hostile import HOSTILE

MAX_LEN = 4096
T = b"1700000000"

EVENTS: list[bytes] = [
    b'{"timestamp": 100, "a.com": 3, "b.com": 0}',
    b'{"timestamp":' + T + b',"example.com":3}',
    '{"timestamp": 1, "bücher.de": 1, "例え.jp": 2}'.encode(),
    b'{"timestamp": 1, "a,b": 1, "c\\":d": 2, "e\\\\": 3, "f, ": 4}',
    b'{"timestamp": 1, "a": 1, "b": 1, "a": 5}',
    b'{"timestamp": 1, "a\\u0000b": 1}',
    b'{"timestamp": 1, "a": 1e400',
    b'{"timestamp": 1, "a": 1e400}',
    b'{"timestamp": 1, "a": 9007199254740991}',
    b'{"timestamp": 1, "a": 9007199254740992}',
    b'{"timestamp": 1, "a": -0}',
    b'{"timestamp": 1, "a": 1.0}',
    b'{"timestamp": 1, "a": true}',
    b'{"timestamp": 1, "a": null}',
    b'{"timestamp": 1, "a": "1"}',
    b'{"timestamp": 1, "": 1}',
    b'{"timestamp": 1}',
    b'{"a": 1}',
    b"[]",
    b'"a"',
    b"{",
    b'{"timestamp": 1, "\\ud800": 1}',
    b'{"timestamp": 1, "\\ud83d\\ude00": 1}',
    b'{"timestamp": 1, "a": 1, "b": 1, "c": 1, "d": 1, "e": 1}',
    msgspec.json.encode({"timestamp": 1, "x" * 255: 1}),
    msgspec.json.encode({"timestamp": 1, "x" * 256: 1}),
    msgspec.json.encode({"timestamp": 1, "\U0001f600" * 64: 1}),
    *(body for body, _, _ in HOSTILE.values()),
    # Near msgspec's nesting limit (1,000), within the fuzzers' --max-len.
    b"[" * 950 + b"]" * 950,
    b'{"timestamp": 1, "a": ' + b"[" * 950 + b"1" + b"]" * 950 + b"}",
    b'{"timestamp": 1, "a": ' + b'{"b": ' * 400 + b"1" + b"}" * 400 + b"}",
]

NDJSON: list[bytes] = [
    b'{"timestamp": 1, "a": 1}\n\n{"timestamp": 2, "b": 2}\n',
    b'{"timestamp": 1,\n"a,b": 1}\n',
    b'{"timestamp": 1, "a,b": 1} {"timestamp": 2, "c": 2}\n',
    b'{"timestamp": 1, "a": 1}{"timestamp": 2, "c,d": 2}',
    b'{"timestamp": 1,\r"a,b": 1}\r\n{"timestamp": 2, "c": 2}\r\n',
    b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "a": "x"}\n',
    b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "b": 1, "b": 1}\n',
    b'{"timestamp": 1, "a": 1}\n{"timestamp": 1, "a": 1e400',
    b'{"timestamp": 1, "a": 1}\n\n{"timestamp": 1, "a": x}',
    b"\n\n",
]


def arrays(events: list[bytes]) -> list[bytes]:
    good = b'{"timestamp": 1, "keep.com": 2}'
    return [b"[" + good + b"," + event + b"]" for event in events] + [
        b"[1e400,",
        b"[" + good + b"]",
        b"[" + good + b"," + good + b"]",
    ]


def write(name: str, bodies: list[bytes]) -> int:
    folder = CORPUS / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    kept = {body for body in bodies if len(body) <= MAX_LEN}
    for body in kept:
        (folder / hashlib.sha1(body).hexdigest()).write_bytes(body)
    return len(kept)


def main() -> None:
    lines = [b"\n".join(EVENTS[i : i + 3]) for i in range(0, len(EVENTS), 3)]
    for name, bodies in [
        ("one", EVENTS),
        ("array", arrays(EVENTS)),
        ("ndjson", NDJSON + EVENTS + lines),
    ]:
        print(f"corpus/{name}: {write(name, bodies)} seeds")


if __name__ == "__main__":
    main()
