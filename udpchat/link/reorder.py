"""Packets received out of order, held as bytes until the gap before them is filled.

The peer chooses what a receiver holds here, so it is kept as bytes rather than objects: one
bytearray for every held packet (per packet a record of its more flag, its chunk count and
chunk lengths, then the chunks) and one array of record offsets indexed by sequence number.
No object per chunk, nor even per packet. That bounds the memory by what is accounted, and it
lets the memory go back to the system afterwards: CPython's small-object allocator returns an
arena (1 MiB) only once every object in it is gone, so thousands of small objects freed among
a few that live on keep their arenas resident, where a few large blocks do not.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator, Sequence

from udpchat import wire

__all__ = ["LENGTH_SIZE", "RECORD_HEADER_SIZE", "ReorderBuffer", "record_size"]

# A record: the more flag and the chunk count, each chunk's length, then the chunks.
_HEADER = struct.Struct("<BH")
LENGTH_SIZE = 2
RECORD_HEADER_SIZE = _HEADER.size
_EMPTY_STORE = sys.getsizeof(bytearray())
# The store while nothing is held, shared: most links of a large room never hold a packet.
_NO_STORE = b""


def _new_offsets() -> array[int]:
    return array("I", bytes(4 * wire.WINDOW))


_OFFSETS_SIZE = sys.getsizeof(_new_offsets())


def record_size(chunks: Sequence[bytes]) -> int:
    """Bytes a packet of ``chunks`` takes in the store."""
    return RECORD_HEADER_SIZE + LENGTH_SIZE * len(chunks) + sum(map(len, chunks))


class ReorderBuffer:
    """Held packets, with sequence numbers from ``base + 1`` to ``base + WINDOW - 1``.

    ``base`` is the receiver's next expected sequence number: that packet is processed as it
    arrives, never held. The receiver calls ``advance`` each time it has processed it.
    """

    __slots__ = ("_bits", "_live", "_offsets", "_store", "base")

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self._bits = 0  # bit i set: the packet ``base + i`` is held
        self._offsets: array[int] | None = None  # record offset by seq % WINDOW
        # _NO_STORE exactly while _offsets is None (nothing held since the last clear)
        self._store: bytes | bytearray = _NO_STORE
        self._live = 0  # bytes of the store that records still held take

    def __len__(self) -> int:
        return self._bits.bit_count()

    def __contains__(self, seq: object) -> bool:
        if type(seq) is not int:
            return False
        i = seq - self.base
        return 0 <= i < wire.WINDOW and self._bits >> i & 1 == 1

    def __iter__(self) -> Iterator[int]:
        bits = self._bits
        while bits:
            low = bits & -bits
            yield self.base + low.bit_length() - 1
            bits ^= low

    @property
    def ack_bits(self) -> int:
        """protocol.md 5.2: bit i set means the packet ``base + 1 + i`` was received."""
        return self._bits >> 1

    def cost(self) -> int:
        """Bytes CPython allocated for what is held, the store's slack included."""
        if not self._bits:
            return 0
        return sys.getsizeof(self._store) + _OFFSETS_SIZE

    def cost_with(self, chunks: Sequence[bytes]) -> int:
        """At least ``cost`` once a packet of ``chunks`` is added: a growing bytearray
        allocates at most an eighth and a few bytes more than it holds."""
        size = len(self._store) + record_size(chunks)
        return max(sys.getsizeof(self._store), _EMPTY_STORE + size + (size >> 3) + 8) + (
            _OFFSETS_SIZE
        )

    def add(self, seq: int, more: bool, chunks: Sequence[bytes]) -> None:
        """Hold a packet with ``base < seq < base + WINDOW`` that is not held yet."""
        if self._offsets is None:
            self._offsets = _new_offsets()
            self._store = bytearray()
        store = self._store
        assert isinstance(store, bytearray)
        start = len(store)
        store += _HEADER.pack(more, len(chunks))
        store += struct.pack(f"<{len(chunks)}H", *map(len, chunks))
        for chunk in chunks:
            store += chunk
        self._offsets[seq % wire.WINDOW] = start
        self._bits |= 1 << (seq - self.base)
        self._live += len(store) - start

    def advance(self) -> tuple[bool, list[bytes]] | None:
        """Move past ``base``, just processed; return the packet now next in order, taken
        out, if it is held."""
        self.base += 1
        self._bits >>= 1
        if not self._bits & 1:
            return None
        assert self._offsets is not None
        more, chunks, size = self._read(self._offsets[self.base % wire.WINDOW])
        self._bits ^= 1
        self._live -= size
        if not self._bits:
            self.clear()
        elif 2 * self._live < len(self._store):
            self._compact()
        return more, chunks

    def clear(self) -> None:
        """Forget every held packet; the sender will send them again."""
        self._bits = 0
        self._offsets = None
        self._store = _NO_STORE
        self._live = 0

    def _read(self, start: int) -> tuple[bool, list[bytes], int]:
        store = self._store
        more, count = _HEADER.unpack_from(store, start)
        pos = start + RECORD_HEADER_SIZE
        lengths = struct.unpack_from(f"<{count}H", store, pos)
        pos += LENGTH_SIZE * count
        chunks = []
        with memoryview(store) as view:
            for length in lengths:
                chunks.append(view[pos : pos + length].tobytes())
                pos += length
        return bool(more), chunks, pos - start

    def _compact(self) -> None:
        """Copy the records still held into a new store once most of the old one is dead."""
        old, offsets = self._store, self._offsets
        assert offsets is not None
        new = bytearray()
        with memoryview(old) as view:
            for seq in self:
                slot = seq % wire.WINDOW
                start = offsets[slot]
                _, count = _HEADER.unpack_from(old, start)
                lengths = struct.unpack_from(f"<{count}H", old, start + RECORD_HEADER_SIZE)
                end = start + RECORD_HEADER_SIZE + LENGTH_SIZE * count + sum(lengths)
                offsets[slot] = len(new)
                new += view[start:end]
        self._store = new
