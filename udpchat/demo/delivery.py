"""How deliveries are judged: every member must get every other member's messages exactly
once, in order. One definition for the demo's verdict and for the benchmark tools.

A delivery is (sender, message id, send time, receive time), both times read from
``time.monotonic_ns``, which on Linux is system-wide: a receiver in another process can
subtract the sender's reading from its own. Sends follow a schedule computed from the start,
so one late send never shifts the ones after it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

__all__ = [
    "DeliveryLog", "DeliveryStats", "LatencySummary", "analyze", "percentile", "schedule_ns",
    "sleep_until_ns", "summarize_latencies",
]


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


_Log = TypeVar("_Log", bound="DeliveryLog")


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

    def add(self, sender: int, msg_id: int, send_ns: int, recv_ns: int) -> None:
        """One delivery: message ``msg_id`` of ``sender``, sent and received at these times."""
        self.senders.append(sender)
        self.msg_ids.append(msg_id)
        self.send_ns.append(send_ns)
        self.recv_ns.append(recv_ns)

    def __len__(self) -> int:
        return len(self.msg_ids)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_Log], data: Mapping[str, Any]) -> _Log:
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
