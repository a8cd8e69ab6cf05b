"""The traffic every system is measured on, and how deliveries are judged.

The same `TrafficSpec` produces byte-identical payloads and the same send schedule whichever
system carries them, so the systems are compared on the same traffic. A payload is what a chat
carries, a line of text: ASCII characters, one byte each, so that a system made for bytes and
one made for text (udpchat's messages are strings) carry exactly the same bytes. Each payload
carries its own identity (sender, message id) and the sender's send time, taken from
``time.monotonic_ns()``: on Linux that clock is system-wide, so a receiver in another process
can subtract it from its own reading to get a one-way latency without any clock exchange.
Deliveries are judged as the demo judges them (``udpchat.demo.delivery``).
"""

from __future__ import annotations

import random
import string
from dataclasses import asdict, dataclass
from typing import Any

from udpchat.demo import delivery
from udpchat.demo.delivery import (
    DeliveryStats,
    LatencySummary,
    analyze,
    percentile,
    schedule_ns,
    sleep_until_ns,
    summarize_latencies,
)

__all__ = [
    "MIN_PAYLOAD_SIZE",
    "PAYLOAD_HEADER",
    "DeliveryLog",
    "DeliveryStats",
    "LatencySummary",
    "TrafficSpec",
    "analyze",
    "make_payload",
    "padding",
    "parse_payload",
    "percentile",
    "schedule_ns",
    "sleep_until_ns",
    "summarize_latencies",
]

PAYLOAD_HEADER = "{:08x}{:08x}{:016x}"
"""sender index, message id, sender's ``monotonic_ns`` just before the send call, in hex."""

MIN_PAYLOAD_SIZE = 32
"""Characters (bytes) of the header."""

FILLER_ALPHABET = (string.ascii_letters + string.digits).encode("ascii")


@dataclass(frozen=True)
class TrafficSpec:
    """Reference traffic: one sender, ``receivers`` receivers, paced messages of fixed size.

    ``drain_s`` is the longest the harness keeps receivers listening after the last send, so
    that late (queued or retransmitted) deliveries still count; the wait ends sooner once every
    receiver has every message. Under heavy loss a retransmitting system needs a long one.
    """

    messages: int = 400
    size: int = 100
    rate: float = 50.0
    receivers: int = 2
    seed: int = 1
    drain_s: float = 1.0

    def __post_init__(self) -> None:
        if self.messages < 1:
            raise ValueError("messages must be >= 1")
        if self.size < MIN_PAYLOAD_SIZE:
            raise ValueError(f"size must be >= {MIN_PAYLOAD_SIZE} bytes (the payload header)")
        if not self.rate > 0:
            raise ValueError("rate must be > 0")
        if self.receivers < 1:
            raise ValueError("receivers must be >= 1")
        if self.drain_s < 0:
            raise ValueError("drain_s must be >= 0")

    @property
    def send_duration_s(self) -> float:
        """Time the sender needs to send every message on schedule."""
        return (self.messages - 1) / self.rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def padding(size: int, seed: int) -> bytes:
    """Deterministic filler so every system carries exactly the same bytes.

    Random letters and digits rather than one repeated character, so that no layer can
    profit from compressible payloads.
    """
    count = max(0, size - MIN_PAYLOAD_SIZE)
    return bytes(random.Random(seed).choices(FILLER_ALPHABET, k=count))


def make_payload(sender: int, msg_id: int, send_ns: int, filler: bytes) -> bytes:
    """A chat message body: fixed header followed by the shared filler."""
    return PAYLOAD_HEADER.format(sender, msg_id, send_ns).encode("ascii") + filler


def parse_payload(payload: bytes) -> tuple[int, int, int]:
    """Return ``(sender, msg_id, send_ns)``; raise ``ValueError`` on a payload without a
    whole header."""
    if len(payload) < MIN_PAYLOAD_SIZE:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than its header")
    head = payload[:MIN_PAYLOAD_SIZE]
    if not head.isascii():
        raise ValueError("payload header is not ASCII")
    return int(head[:8], 16), int(head[8:16], 16), int(head[16:], 16)


class DeliveryLog(delivery.DeliveryLog):
    """A delivery log that reads each delivery from the payload it carried."""

    def record(self, payload: bytes, recv_ns: int) -> None:
        try:
            sender, msg_id, sent = parse_payload(payload)
        except ValueError:
            self.malformed += 1
            return
        self.add(sender, msg_id, sent, recv_ns)
