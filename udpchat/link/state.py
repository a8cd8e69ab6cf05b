"""What one link holds: the state the sending, recovery and receiving sides share.

``LinkState`` declares every attribute of a ``Link`` once, as slots: a relay holds one link
per member, so a link has no ``__dict__``. The sides of the link are mixins deriving from
it with no slots of their own (``__slots__ = ()``), which is what lets ``Link`` combine them
over one instance layout.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from udpchat import wire
from udpchat.budget import ReceiveBudget
from udpchat.link.config import ACK_DELAY, LAZY_ACK_DELAY, LinkConfig, LinkStats
from udpchat.link.reorder import ReorderBuffer
from udpchat.link.rtt import RttEstimator
from udpchat.seal import SessionCipher

__all__ = ["LAZY_SLACK", "NO_PARTIAL", "LinkState", "Packet"]

NO_PARTIAL = b""
"""What a link holds between messages for reassembly: one shared empty (immutable) value,
not an empty buffer per link (an idle member of a large room never splits a message)."""

# The RTO already allows for ACK_DELAY (udpchat.link.rtt); a LAZY packet's ACK may take the
# rest of LAZY_ACK_DELAY on top.
LAZY_SLACK = LAZY_ACK_DELAY - ACK_DELAY


@dataclass(slots=True)
class Packet:
    """One DATA packet in flight, with what its retransmission timer goes by."""

    seq: int
    flags: int  # wire.MORE, wire.LAZY
    chunks: list[bytes]
    first_sent: float
    last_sent: float
    deadline: float
    retransmits: int = 0
    # Retransmissions since the peer last acknowledged anything new: what the backoff and
    # the decision that the peer is gone go by.
    stalled: int = 0

    @property
    def slack(self) -> float:
        """What its timer adds to the RTO: a LAZY packet's ACK may come that much later."""
        return LAZY_SLACK if self.flags & wire.LAZY else 0.0


class LinkState:
    """The attributes of a link; ``Link.__init__`` gives them their first values."""

    __slots__ = (
        "_ack_deadline",
        "_ack_now",
        "_budget",
        "_buffer",
        "_cipher",
        "_discarding",
        "_expected",
        "_held",
        "_in_flight",
        "_largest_acked",
        "_next_pn",
        "_next_seq",
        "_partial",
        "_peer_ack",
        "_ping_requested",
        "_queue",
        "_queue_lazy",
        "_queue_offset",
        "_queued_bytes",
        "_replay_bits",
        "_replay_highest",
        "_stalled",
        "_unacked",
        "config",
        "dead",
        "rtt",
        "stats",
        "token",
    )

    token: bytes
    config: LinkConfig
    stats: LinkStats
    dead: bool
    rtt: RttEstimator
    _cipher: SessionCipher
    _next_pn: int  # the next packet number, which is also the next AEAD nonce
    # anti-replay sliding window over packet numbers (as in RFC 4303 3.4.3)
    _replay_highest: int
    _replay_bits: int
    # sending
    _next_seq: int
    _queue: deque[bytes] | None  # None while empty: an idle member's link holds no deque
    _queue_lazy: deque[bool] | None  # beside _queue: whether each message may go LAZY
    _queue_offset: int  # bytes of the first queued message already packed
    _queued_bytes: int
    _in_flight: dict[int, Packet]  # in sequence order: the first key is the lowest
    _peer_ack: int
    _largest_acked: int
    _stalled: bool  # a packet in flight was retransmitted since the last progress
    # receiving
    _expected: int
    _buffer: ReorderBuffer  # packets out of order; its base is _expected
    _partial: bytes | bytearray  # NO_PARTIAL, or the start of a message split across packets
    _discarding: bool
    _held: int  # accounted bytes of _buffer and _partial, also charged to _budget
    _budget: ReceiveBudget | None
    # acknowledging
    _ack_now: bool
    _ack_deadline: float | None
    _unacked: int
    _ping_requested: bool
