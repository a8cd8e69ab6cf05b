"""Address migration and path validation (protocol.md 7.3, after RFC 9000 sections 8 and 9).

A member's session follows its newest authenticated datagram to a new address (NAT
rebinding, a new network). Until that address echoes a PATH_CHALLENGE, it is VALIDATING:
the relay sends it at most ``AMPLIFICATION_FACTOR`` times what it received from it, so that
a forged move cannot turn the relay into an amplifier against a victim's address.

``Paths.flush`` is therefore where every member's datagrams are put on their way to its
address, and with them what only that address may be sent: a newcomer's ACCEPT again while
the relay has not heard from it (protocol.md 4; the cookie proved that address).
"""

from __future__ import annotations

from collections.abc import Callable

from udpchat import wire
from udpchat.endpoint import Address
from udpchat.relay.config import AMPLIFICATION_FACTOR, RelayStats
from udpchat.relay.events import MemberMoved
from udpchat.relay.outbox import Outbox
from udpchat.relay.sessions import Member, MemberState, SessionTable

__all__ = ["ACCEPT_RESENDS", "Paths"]

_ACCEPTED = MemberState.ACCEPTED
# protocol.md 4: a newcomer not heard from yet gets its ACCEPT again just before retransmitted
# data while fewer than this many of its packets had been retransmitted: at most this many
# extra ACCEPTs per session.
ACCEPT_RESENDS = 3


class Paths:
    def __init__(
        self,
        stats: RelayStats,
        outbox: Outbox,
        sessions: SessionTable,
        rng: Callable[[int], bytes],
    ) -> None:
        self.stats = stats
        self.outbox = outbox
        self.sessions = sessions
        self._rng = rng

    def check(
        self, member: Member, datagram: wire.SessionDatagram, size: int, addr: Address, highest: int
    ) -> None:
        """An authenticated datagram from ``addr``; ``highest`` is the packet number the
        session had seen before it. Only the newest datagram may move a session (an old one
        replayed from elsewhere must not)."""
        if addr != member.addr and datagram.pn > highest:
            self.move(member, addr)
        if member.state is MemberState.VALIDATING and addr == member.addr:
            member.received_unvalidated += size
            if isinstance(datagram, wire.PathResponse) and datagram.data == member.path_data:
                member.advance(MemberState.ACTIVE)
                member.path_data = None
            elif member.path_data is not None:
                self.challenge(member)

    def move(self, member: Member, addr: Address) -> None:
        self.outbox.report(MemberMoved(member.nick, member.addr, addr))
        self.sessions.count_address(member.addr, -1)
        self.sessions.count_address(addr, +1)
        member.addr = addr
        member.advance(MemberState.VALIDATING)
        member.received_unvalidated = 0
        member.sent_unvalidated = 0
        member.path_data = self._rng(wire.PATH_DATA_SIZE)

    def challenge(self, member: Member) -> None:
        assert member.path_data is not None
        datagram = member.link.encode_path(wire.PathChallenge, member.path_data)
        member.sent_unvalidated += len(datagram)
        self.outbox.send(datagram, member.addr)

    def flush(self, member: Member, now: float, out: list[tuple[bytes, Address]]) -> None:
        """What the member's link sends now, within the budget of an unvalidated address
        (one that quit while VALIDATING is CLOSING, and still not validated)."""
        if member.path_data is None:  # validated (the common case, without a property)
            link = member.link
            if member.state is _ACCEPTED:
                resent = link.stats.retransmissions
                datagrams = link.datagrams_to_send(now)
                if resent < ACCEPT_RESENDS and link.stats.retransmissions > resent:
                    # protocol.md 4: nothing heard since the ACCEPT, which may have been
                    # lost: it goes again ahead of the data retransmitted (WELCOME), on the
                    # session's own timer rather than the client's JOIN backoff. The first
                    # few retransmissions only: the client's JOIN still gets it after that.
                    out.append((member.accept, member.addr))
            else:
                datagrams = link.datagrams_to_send(now)
            if datagrams:
                addr = member.addr
                for datagram in datagrams:
                    out.append((datagram, addr))
            return
        budget = AMPLIFICATION_FACTOR * member.received_unvalidated - member.sent_unvalidated
        if budget <= 0:
            self.stats.amplification_held += 1
            return
        for datagram in member.link.datagrams_to_send(now):
            size = len(datagram)
            if size > budget:
                self.stats.amplification_held += 1
                continue  # counts as lost; retransmitted once the address is validated
            budget -= size
            member.sent_unvalidated += size
            out.append((datagram, member.addr))
