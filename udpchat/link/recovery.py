"""Acknowledgements and loss recovery on the sending side of a link (RFC 9002 in spirit).

An ACK carries the peer's next expected sequence number and a bitfield of the packets it
holds beyond it. What it newly acknowledges leaves ``_in_flight``, gives an RTT sample
(never from a retransmitted packet: Karn), resets the backoff, and marks earlier packets
lost after a packet or time threshold. Retransmissions back off; a packet retransmitted
too often with nothing new acknowledged meanwhile declares the peer dead.
"""

from __future__ import annotations

from udpchat import wire
from udpchat.link.config import K_PACKET_THRESHOLD, MAX_BACKOFF_EXPONENT
from udpchat.link.state import LinkState, Packet

__all__ = ["LossRecovery"]


class LossRecovery(LinkState):
    """Mixin of ``Link``: its state is ``LinkState``'s."""

    __slots__ = ()

    def _ack_is_plausible(self, ack: int, bits: int) -> bool:
        if ack > self._next_seq:
            return False
        return bits == 0 or ack + bits.bit_length() < self._next_seq

    def _on_ack(self, ack: int, bits: int, now: float) -> None:
        if ack < self._peer_ack:
            if not bits:
                return  # an old ACK overtaken by a newer one
        else:
            self._peer_ack = ack
        flight = self._in_flight
        if not flight:
            return  # nothing to acknowledge (an idle link's heartbeat)
        newly: list[Packet] = []
        while flight:
            seq = next(iter(flight))  # the lowest: packets enter in sequence order
            if seq >= ack:
                break
            newly.append(flight.pop(seq))
        while bits:
            low = bits & -bits
            seq = ack + low.bit_length()
            bits ^= low
            packet = flight.pop(seq, None)
            if packet is not None:
                newly.append(packet)
        if not newly:
            return
        # the highest: those below ``ack`` came first, then those of the bitmap, each in order
        largest = newly[-1]
        if largest.seq > self._largest_acked:
            self._largest_acked = largest.seq
            # Karn: not from a retransmitted packet; nor from a LAZY one, whose ACK the peer
            # may have held back for up to LAZY_ACK_DELAY (protocol.md 5.5)
            if largest.retransmits == 0 and not largest.flags & wire.LAZY:
                self.rtt.on_sample(now - largest.last_sent)
                self._sync_stats()
        if self._stalled:
            self._reset_backoff()
        if flight:
            self._detect_losses(largest, now)
        else:
            self._in_flight = {}  # a dict keeps its grown table: idle members get a small one

    def _reset_backoff(self) -> None:
        """RFC 9002 6.2.1: an ACK of new data resets the backoff. The peer is alive, and a
        receiver short of buffer space drops packets that are out of order (protocol.md
        5.8): once the gap before them is filled they must go again soon, not after waits
        that grew while they could not be taken."""
        self._stalled = False
        rto = self.rtt.rto
        for packet in self._in_flight.values():
            if packet.stalled:
                packet.stalled = 0
                packet.deadline = min(packet.deadline, packet.last_sent + rto + packet.slack)

    def _detect_losses(self, acked: Packet, now: float) -> None:
        """RFC 9002 6.1: packets sent before an acknowledged one are lost after a packet
        threshold or a time threshold; the rest get an earlier timer."""
        loss_delay = self.rtt.loss_delay()
        for packet in self._in_flight.values():
            if packet.seq >= acked.seq:
                break
            if packet.last_sent >= acked.last_sent:
                continue  # already retransmitted after the acknowledged packet went out
            if acked.seq - packet.seq >= K_PACKET_THRESHOLD or now - packet.last_sent >= loss_delay:
                if packet.deadline > now:
                    packet.deadline = now
                    self.stats.fast_retransmissions += 1
            else:
                packet.deadline = min(packet.deadline, packet.last_sent + loss_delay)

    def _backoff(self, retransmits: int) -> float:
        # The exponent is capped: the relay's links never give up by count, and 1.5**1751
        # overflows a float; long before that the wait is max_rto anyway.
        exponent = min(retransmits, MAX_BACKOFF_EXPONENT)
        return min(self.rtt.rto * self.config.backoff**exponent, self.config.max_rto)

    def handle_timer(self, now: float) -> None:
        """Give up on the peer once a packet has been retransmitted too often in vain.

        In vain means with nothing new acknowledged meanwhile: a receiver short of buffer
        space drops packets that are out of order (protocol.md 5.8), which costs them
        retransmissions while the peer is plainly alive and taking the packets in order.
        """
        limit = self.config.max_retransmissions
        for packet in self._in_flight.values():
            if packet.deadline <= now and packet.stalled >= limit:
                self.dead = True
                break

    def _sync_stats(self) -> None:
        self.stats.srtt = self.rtt.srtt
        self.stats.rto = self.rtt.rto
