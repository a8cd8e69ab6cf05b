"""A session datagram's bytes, written by hand: the clear header and the fields of DATA,
ACK and PING.

They are packed for every datagram a link sends, where msgpack's ``packb`` (a Packer made
per call) and the schema's generic encoder cost three times as much. Each function writes
exactly what the datagram's schema in udpchat.wire writes (tests/test_wire.py holds them to
it byte for byte): the shortest form of every uint, a bin 8 or 16 header, an array's fix or
16 header. Decoding stays in udpchat.wire, the one door for bytes from the network.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from udpchat.wire import TOKEN_SIZE, DatagramType

__all__ = [
    "BYTE",
    "ack_fields",
    "data_fields",
    "encode_session",
    "encode_uint",
    "session_header",
]

BYTE = [bytes((i,)) for i in range(256)]
"""``BYTE[i] == bytes((i,))``, without building it."""
_UINT16 = struct.Struct(">BH").pack
_UINT32 = struct.Struct(">BI").pack
_UINT64 = struct.Struct(">BQ").pack


def session_header(kind: DatagramType, token: bytes, pn: int) -> bytes:
    """protocol.md 3 and 8.1: a session datagram's header in the clear, ``type || token ||
    pn``, which is also the associated data its seal authenticates."""
    if len(token) != TOKEN_SIZE:
        raise ValueError(f"a token is {TOKEN_SIZE} bytes")
    return BYTE[kind] + token + (BYTE[pn] if pn < 0x80 else encode_uint(pn))


def encode_session(kind: DatagramType, token: bytes, pn: int, sealed: bytes) -> bytes:
    """A session datagram's envelope around ``sealed``."""
    return session_header(kind, token, pn) + sealed


def encode_uint(value: int) -> bytes:
    """A msgpack unsigned integer in its shortest form (``value`` is from 0 to MAX_UINT)."""
    if value < 0x80:
        return BYTE[value]
    if value < 0x100:
        return BYTE[0xCC] + BYTE[value]
    if value < 0x10000:
        return _UINT16(0xCD, value)
    if value < 0x100000000:
        return _UINT32(0xCE, value)
    return _UINT64(0xCF, value)


def data_fields(ack: int, ack_bits: int, seq: int, flags: int, chunks: Sequence[bytes]) -> bytes:
    """The plaintext of a DATA datagram: ``[ack, ack_bits, seq, flags, *chunks]``."""
    count = 4 + len(chunks)  # at most 4 + MAX_CHUNKS: an array 16 past 15
    parts = [
        BYTE[0x90 | count] if count < 16 else _UINT16(0xDC, count),
        BYTE[ack] if ack < 0x80 else encode_uint(ack),
        BYTE[ack_bits] if ack_bits < 0x80 else encode_uint(ack_bits),
        BYTE[seq] if seq < 0x80 else encode_uint(seq),
        BYTE[flags],  # DATA_FLAGS: a fixint
    ]
    for chunk in chunks:
        size = len(chunk)
        if size < 0x100:
            parts.append(BYTE[0xC4] + BYTE[size])
        else:  # longer than a datagram holds: only tests and tools write those
            parts.append(_UINT16(0xC5, size) if size < 0x10000 else _UINT32(0xC6, size))
        parts.append(chunk)
    return b"".join(parts)


def ack_fields(ack: int, ack_bits: int) -> bytes:
    """The plaintext of an ACK or PING: ``[ack, ack_bits]``."""
    return (
        b"\x92"
        + (BYTE[ack] if ack < 0x80 else encode_uint(ack))
        + (BYTE[ack_bits] if ack_bits < 0x80 else encode_uint(ack_bits))
    )
