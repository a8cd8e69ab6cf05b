"""Datagrams read off the socket ahead of the endpoint, handshakes first.

A busy relay cannot handle every datagram as it arrives, and whatever it has not read waits
in the kernel's receive buffer, in order of arrival: a joiner's HELLO then waits behind a
thousand acknowledgements of the last fan-out, and once the buffer is full the kernel drops
whatever comes next, handshakes and acknowledgements alike, blindly. Reading is cheap next
to handling (a few microseconds against tens), so the driver reads what is queued into this
inbox first and hands the endpoint urgent datagrams (for the relay: HELLO and JOIN) ahead of
all the others, however long they have waited.

Invariants: the inbox holds at most ``max_bytes`` (each datagram counted with
``OVERHEAD`` bytes of bookkeeping, so that a flood of tiny datagrams is bounded too); a
full inbox is not read into (what follows waits in the kernel, as before); each kind is
handed out in order of arrival, and every datagram put in is handed out exactly once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from udpchat.endpoint import Address

__all__ = ["OVERHEAD", "Inbox"]

# Bytes a queued datagram costs besides its payload: the bytes object, the address tuple
# and its strings, the entry in the deque.
OVERHEAD = 256


class Inbox:
    """Datagrams waiting for the endpoint; ``urgent(data)`` picks those that go first."""

    __slots__ = ("_ordinary", "_urgent", "bytes", "is_urgent", "max_bytes")

    def __init__(self, max_bytes: int, urgent: Callable[[bytes], bool] | None = None) -> None:
        if max_bytes < 1:
            raise ValueError("an inbox holds at least one byte")
        self.max_bytes = max_bytes
        self.is_urgent = urgent
        self._urgent: deque[tuple[bytes, Address]] = deque()
        self._ordinary: deque[tuple[bytes, Address]] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._urgent) + len(self._ordinary)

    def __bool__(self) -> bool:  # asked every turn: no two len() calls
        return bool(self._urgent or self._ordinary)

    @property
    def full(self) -> bool:
        return self.bytes >= self.max_bytes

    @property
    def urgent_waiting(self) -> bool:
        return bool(self._urgent)

    def put(self, data: bytes, addr: Address) -> None:
        """Queue one datagram (the caller stops reading once ``full``)."""
        urgent = self.is_urgent
        queue = self._urgent if urgent is not None and urgent(data) else self._ordinary
        queue.append((data, addr))
        self.bytes += len(data) + OVERHEAD

    def fill(
        self,
        got: tuple[bytes, Address] | None,
        receive: Callable[[float], tuple[bytes, Address] | None],
        peer: Address | None,
        limit: int,
    ) -> bool:
        """Put ``got`` and what ``receive(0.0)`` returns into the inbox until it returns
        None, ``limit`` datagrams were read (a flood from strangers ends it too) or the
        inbox is full; datagrams from anyone but ``peer``, when given, are dropped. False
        if it stopped full: the rest waits in the kernel until there is room."""
        if got is None:
            got = receive(0.0)
        count = 0
        put = self.put
        while got is not None:
            if peer is None or got[1] == peer:
                put(*got)
            count += 1
            if self.full:
                return False
            if count >= limit:
                return True
            got = receive(0.0)
        return True

    def take(self, limit: int) -> tuple[list[tuple[bytes, Address]], list[tuple[bytes, Address]]]:
        """The next turn's: up to ``limit`` urgent datagrams, and up to ``limit`` others."""
        return self._take(self._urgent, limit), self._take(self._ordinary, limit)

    def _take(
        self, queue: deque[tuple[bytes, Address]], limit: int
    ) -> list[tuple[bytes, Address]]:
        # Every turn takes from both queues, and most turns find them empty or take all:
        # those cost no per-datagram work here.
        if not queue:
            return []
        if len(queue) <= limit:
            out = list(queue)
            queue.clear()
        else:
            out = [queue.popleft() for _ in range(limit)]
        if not (self._urgent or self._ordinary):
            self.bytes = 0  # what it held is exactly what was taken
            return out
        size = OVERHEAD * len(out)
        for data, _ in out:
            size += len(data)
        self.bytes -= size
        return out
