"""The traffic every system is measured on, and how deliveries are judged.

The same `TrafficSpec` produces byte-identical payloads and the same send schedule whichever
system carries them, so the systems are compared on the same traffic. Each payload carries its
own identity (sender, message id) and the sender's send time, taken from
``time.monotonic_ns()``: on Linux that clock is system-wide, so a receiver in another process
can subtract it from its own reading to get a one-way latency without any clock exchange.
"""

from __future__ import annotations

import math
import random
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PAYLOAD_HEADER = struct.Struct("!IIQ")
"""sender index, message id, sender's ``monotonic_ns`` just before the send call."""

MIN_PAYLOAD_SIZE = PAYLOAD_HEADER.size


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

    Random rather than zeros so that no layer can profit from compressible payloads.
    """
    return random.Random(seed).randbytes(max(0, size - MIN_PAYLOAD_SIZE))


def make_payload(sender: int, msg_id: int, send_ns: int, filler: bytes) -> bytes:
    """A chat message body: fixed header followed by the shared filler."""
    return PAYLOAD_HEADER.pack(sender, msg_id, send_ns) + filler


def parse_payload(payload: bytes) -> tuple[int, int, int]:
    """Return ``(sender, msg_id, send_ns)``; raise ``ValueError`` on a truncated payload."""
    if len(payload) < MIN_PAYLOAD_SIZE:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than its header")
    sender, msg_id, send_ns = PAYLOAD_HEADER.unpack_from(payload)
    return int(sender), int(msg_id), int(send_ns)


def schedule_ns(start_ns: int, count: int, rate: float) -> Iterator[tuple[int, int]]:
    """Yield ``(msg_id, due_ns)``: due times computed from the start, never from the last send.

    Deriving each due time from ``start_ns`` keeps the average rate exact even when one send is
    late (no cumulative drift); a late sender catches up instead of shifting every later message.
    """
    period_ns = 1e9 / rate
    for i in range(count):
        yield i, start_ns + round(i * period_ns)


def sleep_until_ns(due_ns: int) -> None:
    """Sleep until the monotonic clock reaches ``due_ns`` (returns at once if already past)."""
    remaining = due_ns - time.monotonic_ns()
    if remaining > 0:
        time.sleep(remaining / 1e9)


@dataclass
class DeliveryLog:
    """What one member received: one entry per message handed to the application, in order.

    Columns are kept as parallel lists because they cross a process boundary as JSON and a
    receiver may log tens of thousands of entries in fan-out runs.
    """

    member: int
    senders: list[int] = field(default_factory=list)
    msg_ids: list[int] = field(default_factory=list)
    send_ns: list[int] = field(default_factory=list)
    recv_ns: list[int] = field(default_factory=list)
    malformed: int = 0

    def record(self, payload: bytes, recv_ns: int) -> None:
        try:
            sender, msg_id, sent = parse_payload(payload)
        except ValueError:
            self.malformed += 1
            return
        self.senders.append(sender)
        self.msg_ids.append(msg_id)
        self.send_ns.append(sent)
        self.recv_ns.append(recv_ns)

    def __len__(self) -> int:
        return len(self.msg_ids)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeliveryLog:
        return cls(
            member=int(data["member"]),
            senders=[int(x) for x in data["senders"]],
            msg_ids=[int(x) for x in data["msg_ids"]],
            send_ns=[int(x) for x in data["send_ns"]],
            recv_ns=[int(x) for x in data["recv_ns"]],
            malformed=int(data.get("malformed", 0)),
        )


@dataclass(frozen=True)
class LatencySummary:
    """One-way latency of first deliveries, in milliseconds (nearest-rank percentiles)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float


@dataclass(frozen=True)
class DeliveryStats:
    """How well a set of receivers got the messages they should have got.

    ``out_of_order`` counts first deliveries that arrive after a higher id from the same sender
    (so one message overtaken by k others counts once). ``unexpected`` counts deliveries no
    receiver should have seen (e.g. its own messages echoed back): a relay bug, not noise.
    """

    expected: int
    delivered: int
    duplicates: int
    out_of_order: int
    lost: int
    unexpected: int
    malformed: int
    latency_ms: LatencySummary | None
    first_send_ns: int | None
    last_recv_ns: int | None

    @property
    def delivery_ratio(self) -> float:
        return self.delivered / self.expected if self.expected else 1.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["delivery_ratio"] = self.delivery_ratio
        return data


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of an already sorted, non-empty sequence.

    Nearest-rank always returns an observed value, so p99 of 400 samples is the 396th sample and
    never an interpolation between two deliveries.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError("q must be within [0, 100]")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize_latencies(latencies_ms: Sequence[float]) -> LatencySummary | None:
    if not latencies_ms:
        return None
    ordered = sorted(latencies_ms)
    return LatencySummary(
        count=len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        max=ordered[-1],
        mean=sum(ordered) / len(ordered),
    )


def analyze(logs: Sequence[DeliveryLog], sent: Mapping[int, int]) -> DeliveryStats:
    """Judge receivers' logs against what was sent.

    ``sent`` maps each sender's member index to the number of messages it sent (ids
    ``0..n-1``). Every member is expected to receive every message of every *other* sender
    exactly once. Latency is taken from each message's first delivery only.
    """
    expected = 0
    delivered = 0
    duplicates = 0
    out_of_order = 0
    unexpected = 0
    malformed = 0
    latencies: list[float] = []
    first_send: int | None = None
    last_recv: int | None = None
    for log in logs:
        malformed += log.malformed
        expected += sum(n for s, n in sent.items() if s != log.member)
        seen: set[tuple[int, int]] = set()
        highest: dict[int, int] = {}
        for sender, msg_id, send_ns, recv_ns in zip(
            log.senders, log.msg_ids, log.send_ns, log.recv_ns, strict=True
        ):
            if sender == log.member or not 0 <= msg_id < sent.get(sender, 0):
                unexpected += 1
                continue
            key = (sender, msg_id)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            delivered += 1
            if msg_id < highest.get(sender, -1):
                out_of_order += 1
            highest[sender] = max(highest.get(sender, -1), msg_id)
            latencies.append((recv_ns - send_ns) / 1e6)
            first_send = send_ns if first_send is None else min(first_send, send_ns)
            last_recv = recv_ns if last_recv is None else max(last_recv, recv_ns)
    return DeliveryStats(
        expected=expected,
        delivered=delivered,
        duplicates=duplicates,
        out_of_order=out_of_order,
        lost=expected - delivered,
        unexpected=unexpected,
        malformed=malformed,
        latency_ms=summarize_latencies(latencies),
        first_send_ns=first_send,
        last_recv_ns=last_recv,
    )
