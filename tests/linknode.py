"""A Link wrapped as a simulator node: the smallest possible shell around the core."""

from __future__ import annotations

from udpchat import wire
from udpchat.link import Link
from udpchat.sim import Address


class LinkNode:
    def __init__(self, link: Link, peer: Address) -> None:
        self.link = link
        self.peer = peer
        self.delivered: list[bytes] = []
        self.garbage = 0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        try:
            datagram = wire.decode_datagram(data)
        except wire.DecodeError:
            self.garbage += 1
            return
        if not isinstance(datagram, wire.Protected):
            self.garbage += 1
            return
        messages = self.link.receive_sealed(datagram, now)
        if messages:
            self.delivered.extend(messages)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return [(d, self.peer) for d in self.link.datagrams_to_send(now)]

    def next_timer(self) -> float | None:
        return self.link.next_timer()

    def handle_timer(self, now: float) -> None:
        self.link.handle_timer(now)
