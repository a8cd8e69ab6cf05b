"""What sealing costs per datagram: a 100-byte chat line in a DATA, sealed and opened.

    python bench/scripts/seal_cost.py

Prints microseconds per operation (the best of three timeit runs, each of many calls): seal
and open of the DATA under one direction's key, without and with a room key (padding),
beside msgpack-encoding the same fields in the clear, which is what an unsealed protocol
would spend on it. Every session datagram pays one seal at its sender and one open at its
receiver (protocol.md 8); a fan-out to N members is N datagrams, so N seals.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from itertools import count

from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.seal import SessionCipher

CALLS = 100_000
TOKEN = b"T" * 8


def best(operation: Callable[[], object]) -> float:
    """Microseconds per call, the best of three runs."""
    return min(timeit.repeat(operation, number=CALLS, repeat=3)) / CALLS * 1e6


def main() -> None:
    say = m.encode_message(m.Say("x" * 88, b"i" * 8))  # a 100-byte message
    fields = session_bytes.data_fields(3, 0, 7, 0, [say])
    clear = best(lambda: wire.pack([wire.PROTOCOL_VERSION, 6, TOKEN, 5, 3, 0, 7, False, say]))
    print(f"DATA fields: {len(fields)} bytes; msgpack of the datagram in the clear: {clear:.2f} us")
    for padded in (False, True):
        seal, opened, size = measure(fields, padded)
        label = "with a room key (padded)" if padded else "without a room key"
        print(f"{label}: {size} bytes sealed; seal {seal:.2f} us, open {opened:.2f} us")


def measure(fields: bytes, padded: bool) -> tuple[float, float, int]:
    """(seal us, open us, sealed size) of one DATA with ``fields``."""
    sender = SessionCipher(bytes(32), bytes(range(32)), padded)
    receiver = SessionCipher(bytes(range(32)), bytes(32), padded)
    pns = count()
    seal = best(lambda: sender.seal(wire.DatagramType.DATA, TOKEN, next(pns), fields))
    datagram = sender.seal(wire.DatagramType.DATA, TOKEN, 5, fields)
    envelope = wire.decode_datagram(datagram)
    assert isinstance(envelope, wire.Protected)
    return seal, best(lambda: receiver.open(envelope)), len(datagram)


if __name__ == "__main__":
    main()
