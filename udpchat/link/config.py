"""What a link is told and what it counts: protocol constants, tuning knobs, statistics,
and the two errors ``Link.send`` raises.

protocol.md "Reliability" specifies the behaviour on the wire; the names of the constants
follow it (and RFC 9002 where they come from there).
"""

from __future__ import annotations

from dataclasses import dataclass

from udpchat import wire
from udpchat.errors import UsageError
from udpchat.messages import MAX_MESSAGE_SIZE
from udpchat.seal import REKEY_INTERVAL

__all__ = [
    "ACK_DELAY", "ACK_EVERY", "ASAP", "K_PACKET_THRESHOLD", "LAZY_ACK_DELAY",
    "MAX_BACKOFF_EXPONENT",
    "OVERSIZED_PREFIX", "REPLAY_WINDOW", "LinkConfig", "LinkDead", "LinkStats",
    "SendBufferFull",
]

# RFC 9002 6.1.1: a packet is lost once a packet sent this many sequence numbers later is
# acknowledged.
K_PACKET_THRESHOLD = 3
# protocol.md "Timers": how long a receiver may hold back an ACK for in-order data.
ACK_DELAY = 0.001
# protocol.md 5.3: how long a receiver may hold back an ACK for a DATA flagged LAZY; its
# sender's timer waits this much longer for it (QUIC's default max_ack_delay).
LAZY_ACK_DELAY = 0.025
# protocol.md "Reliability": an ACK is sent at once when this many packets are unacknowledged.
ACK_EVERY = 2
# protocol.md "Replay protection": how far behind the highest packet number a datagram may be.
REPLAY_WINDOW = 64
# protocol.md 5.1: what a receiver delivers in place of a message over MAX_MESSAGE_SIZE.
OVERSIZED_PREFIX = 16
# Past this many retransmissions the backoff factor stops growing (any RTO times 1.5**64 is
# far beyond any max_rto).
MAX_BACKOFF_EXPONENT = 64
# A timer value meaning "now, whatever now is".
ASAP = float("-inf")


class SendBufferFull(UsageError):
    """The link holds as much unsent data as it may; try again once ``send_buffer_free`` grows."""


class LinkDead(UsageError):
    """Raised by ``send`` on a link that has given up on its peer."""


@dataclass(frozen=True)
class LinkConfig:
    """Tuning knobs; the defaults suit a LAN and still adapt to slower paths via the RTT."""

    min_rto: float = 0.004
    max_rto: float = 1.0
    initial_rtt: float = 0.1
    backoff: float = 1.5
    ack_delay: float = ACK_DELAY
    # protocol.md 5.3: in-order packets left unacknowledged before an ACK goes at once (RFC
    # 9000 13.2.2's "every second ack-eliciting packet"). Raising it, or ack_delay, saves ACK
    # datagrams only when packets arrive faster than ack_delay, and slows the recovery of a
    # lost packet by as much (bench/scripts/wire_cost.py measures both).
    ack_every: int = ACK_EVERY
    max_retransmissions: int = 16
    window: int = wire.WINDOW
    send_buffer: int = 256 * 1024
    # protocol.md 5.8: bytes (as accounted: payload plus per-packet and per-chunk overhead)
    # this link may hold for out-of-order packets and reassembly. The default holds a full
    # window of full-size packets (about 90 KB accounted) while the largest message is being
    # reassembled (up to 72 KB with the bytearray's slack).
    receive_buffer: int = 3 * MAX_MESSAGE_SIZE
    # The largest datagram this link builds (sealed, as it goes on the wire).
    max_datagram: int = wire.MAX_DATAGRAM_SIZE
    # protocol.md 8.1: packet numbers per key phase. A protocol constant: both ends of a
    # session must use the same one; tests lower it to see many key phases.
    rekey_interval: int = REKEY_INTERVAL

    def __post_init__(self) -> None:
        if not 1 <= self.window <= wire.WINDOW:
            raise ValueError(f"window must be between 1 and {wire.WINDOW} packets")
        if self.backoff < 1:
            raise ValueError("backoff must be at least 1")
        if self.ack_every < 1:
            raise ValueError("ack_every must be at least 1")
        if self.max_retransmissions < 1:
            raise ValueError("max_retransmissions must be at least 1")
        if not 256 <= self.max_datagram <= wire.MAX_DATAGRAM_SIZE:
            raise ValueError(f"max_datagram must be between 256 and {wire.MAX_DATAGRAM_SIZE}")
        if self.rekey_interval < 1:
            raise ValueError("rekey_interval must be at least 1")
        if self.send_buffer < MAX_MESSAGE_SIZE:
            raise ValueError(f"send_buffer must hold at least one {MAX_MESSAGE_SIZE}-byte message")
        if self.receive_buffer < 0:
            raise ValueError("receive_buffer cannot be negative")


@dataclass(slots=True)
class LinkStats:
    """Counters for /stats and the benchmarks."""

    datagrams_sent: int = 0
    bytes_sent: int = 0
    datagrams_received: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    retransmissions: int = 0
    fast_retransmissions: int = 0
    acks_sent: int = 0
    messages_sent: int = 0
    messages_delivered: int = 0
    duplicates: int = 0
    replays: int = 0
    out_of_window: int = 0
    invalid: int = 0
    auth_failures: int = 0
    oversized: int = 0
    over_budget: int = 0
    srtt: float = 0.0
    rto: float = 0.0

    @property
    def loss_estimate(self) -> float:
        """Share of packets that needed a retransmission (spurious ones included)."""
        total = self.packets_sent + self.retransmissions
        return self.retransmissions / total if total else 0.0
