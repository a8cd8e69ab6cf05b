"""The one interface every sans-I/O endpoint offers, and the address type it speaks in.

The relay core, the client session, the simulator's test nodes and the socket driver all meet
here: the driver (or the simulator) hands in datagrams with their source address and the time,
asks for datagrams to send with their destinations, and sleeps until ``next_timer``. Nothing
behind this interface touches a socket, a thread or a clock.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Address", "Endpoint"]

# A UDP address as the socket module gives it: (host, port); IPv6 scope and flow are dropped.
Address = tuple[str, int]


class Endpoint(Protocol):
    """What a driver needs from a sans-I/O endpoint."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram that arrived from ``addr`` at ``now``; never raises on bad bytes."""
        ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything ready to go out, with its destination; the caller sends them in order."""
        ...

    def next_timer(self) -> float | None:
        """When ``handle_timer`` must next be called (``None``: only a datagram can wake it)."""
        ...

    def handle_timer(self, now: float) -> None:
        """Run whatever timers are due at ``now``."""
        ...
