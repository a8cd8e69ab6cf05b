"""The reliability layer: a reliable, ordered message stream over datagrams, sans I/O.

``Link`` is one end of it (one per client-relay pair); see udpchat.link.core for how it is
used. The package is split by idea:

* ``config``: protocol constants, ``LinkConfig``, ``LinkStats`` and the errors;
* ``sending``: the message queue and packing messages into DATA packets;
* ``recovery``: acknowledgements, loss detection, retransmission backoff, giving up;
* ``receiving``: anti-replay, in-order delivery, reassembly and the receive budgets;
* ``reorder``: the compact buffer of packets that arrived out of order;
* ``rtt``: RTT estimation and the retransmission timeout (RFC 6298, RFC 9002);
* ``core``: the ``Link`` class that ties them together.

Import from here: ``from udpchat.link import Link, LinkConfig``.
"""

from __future__ import annotations

from udpchat.link.config import (
    ACK_DELAY,
    ACK_EVERY,
    ASAP,
    K_PACKET_THRESHOLD,
    LAZY_ACK_DELAY,
    MAX_BACKOFF_EXPONENT,
    OVERSIZED_PREFIX,
    REPLAY_WINDOW,
    LinkConfig,
    LinkDead,
    LinkStats,
    SendBufferFull,
)
from udpchat.link.core import Link

__all__ = [
    "ACK_DELAY", "ACK_EVERY", "ASAP", "K_PACKET_THRESHOLD", "LAZY_ACK_DELAY",
    "MAX_BACKOFF_EXPONENT",
    "OVERSIZED_PREFIX", "REPLAY_WINDOW", "Link", "LinkConfig", "LinkDead", "LinkStats",
    "SendBufferFull",
]
