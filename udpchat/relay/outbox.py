"""Where the relay's parts leave what the shell must take: datagrams and reports.

Datagrams here go to an address, not through a member's link: CHALLENGE, ACCEPT, REJECT,
RESET and PATH_CHALLENGE. Session data waits in each member's link until its flush.
"""

from __future__ import annotations

from udpchat.endpoint import Address
from udpchat.relay.events import DatagramDropped, RelayEvent

__all__ = ["MAX_PENDING_EVENTS", "Outbox"]

MAX_PENDING_EVENTS = 10_000


class Outbox:
    __slots__ = ("datagrams", "events")

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Address]] = []
        self.events: list[RelayEvent] = []

    def send(self, data: bytes, addr: Address) -> None:
        self.datagrams.append((data, addr))

    def report(self, event: RelayEvent) -> None:
        self.events.append(event)

    def drop(self, reason: str, addr: Address) -> None:
        """Report a dropped datagram; a flood of them must not grow memory."""
        if len(self.events) < MAX_PENDING_EVENTS:
            self.events.append(DatagramDropped(reason, addr))

    def take_datagrams(self) -> list[tuple[bytes, Address]]:
        out, self.datagrams = self.datagrams, []
        return out

    def take_events(self) -> list[RelayEvent]:
        out, self.events = self.events, []
        return out
