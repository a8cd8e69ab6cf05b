"""The relays a client may use for one room, and which one it talks to (protocol.md 6.9).

A ``RelayRing`` holds the addresses the user gave (``--server A,B,...``), in that order, and
the one the session talks to now. Fail-over moves round-robin to the next address: the
order is the user's, so that a standby listed second is tried first, and every relay gets
its turn however many times the client moves. A relay whose key the client's trust check
refused is left out of the ring for the rest of the session; the others stay usable.

Invariant: ``current`` is always one of the addresses and never a refused one while any is
left (when the last one is refused the session ends, so nothing asks again).
"""

from __future__ import annotations

from udpchat.endpoint import Address

__all__ = ["RelayRing", "relay_label"]


def relay_label(address: Address) -> str:
    """``HOST:PORT`` (an IPv6 host in brackets), as a user would type the address."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RelayRing:
    """The room's relays in the user's order, the current one, and those refused."""

    __slots__ = ("_addresses", "_index", "_refused", "_unreachable")

    def __init__(self, server: Address, others: tuple[Address, ...] = ()) -> None:
        self._addresses = (server, *others)
        self._index = 0
        self._refused: set[int] = set()
        self._unreachable: set[int] = set()  # refused by the network during the first join

    @property
    def addresses(self) -> tuple[Address, ...]:
        return self._addresses

    @property
    def current(self) -> Address:
        return self._addresses[self._index]

    @property
    def usable(self) -> int:
        """How many relays the session may still talk to."""
        return len(self._addresses) - len(self._refused)

    @property
    def many(self) -> bool:
        """Whether there is another relay to move to (fail-over is on)."""
        return self.usable > 1

    def advance(self) -> Address:
        """Make the next usable relay after the current one current, and return it (the
        current one again when it is the only one left)."""
        count = len(self._addresses)
        for step in range(1, count + 1):
            index = (self._index + step) % count
            if index not in self._refused:
                self._index = index
                break
        return self.current

    def refuse_current(self) -> bool:
        """Leave the current relay out from now on; False when none is left to use."""
        self._refused.add(self._index)
        return self.usable > 0

    def unreachable(self) -> bool:
        """The network refused the current relay (first join): whether a usable relay is
        left that it has not refused."""
        self._unreachable.add(self._index)
        return len(self._unreachable | self._refused) < len(self._addresses)
