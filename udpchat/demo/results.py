"""What a run recorded and how it is judged: the recorder the bots report to (from many
threads), and the verdicts per member and per run built from it with ``analyze``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from udpchat.demo.config import DemoConfig, bot_name, parse_text
from udpchat.demo.delivery import DeliveryLog, DeliveryStats, analyze

__all__ = [
    "DemoResult", "LinkNumbers", "MemberVerdict", "Progress", "Recorder", "RunResult",
    "percent", "summary_line", "verdicts",
]


@dataclass(frozen=True)
class MemberVerdict:
    """One bot's view of a run. ``retransmissions`` are its link's resends to the relay and
    ``relay_retransmissions`` the relay's resends to it (both None over plain UDP)."""

    name: str
    sent: int
    expected: int
    delivered: int
    duplicates: int
    out_of_order: int
    lost: int
    retransmissions: int | None
    relay_retransmissions: int | None
    srtt_ms: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    reconnects: int = 0
    refused: int = 0
    history_gaps: int = 0


@dataclass(frozen=True)
class RunResult:
    """One pass of the traffic: ``mode`` is ``"reliable"`` or ``"plain-udp"``."""

    mode: str
    members: tuple[MemberVerdict, ...]
    stats: DeliveryStats
    duration_s: float
    send_errors: tuple[str, ...] = ()
    join_s: float = 0.0

    @property
    def expected(self) -> int:
        return self.stats.expected

    @property
    def delivered(self) -> int:
        return self.stats.delivered

    @property
    def duplicates(self) -> int:
        return self.stats.duplicates

    @property
    def out_of_order(self) -> int:
        return self.stats.out_of_order

    @property
    def retransmissions(self) -> int | None:
        counts = [
            n
            for m in self.members
            for n in (m.retransmissions, m.relay_retransmissions)
            if n is not None
        ]
        return sum(counts) if counts else None

    @property
    def clean(self) -> bool:
        """Everything delivered exactly once, in order, and nothing else."""
        s = self.stats
        return (
            s.delivered == s.expected
            and s.duplicates == 0
            and s.out_of_order == 0
            and s.unexpected == 0
            and s.malformed == 0
        )

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "mode": self.mode,
            "expected": s.expected,
            "delivered": s.delivered,
            "duplicates": s.duplicates,
            "out_of_order": s.out_of_order,
            "lost": s.lost,
            "unexpected": s.unexpected,
            "malformed": s.malformed,
            "delivery_ratio": s.delivery_ratio,
            "retransmissions": self.retransmissions,
            "latency_ms": None
            if s.latency_ms is None
            else {k: round(v, 3) for k, v in asdict(s.latency_ms).items()},
            "join_s": round(self.join_s, 3),
            "duration_s": round(self.duration_s, 3),
            "send_errors": list(self.send_errors),
            "clean": self.clean,
            "members": [asdict(m) for m in self.members],
        }


@dataclass(frozen=True)
class DemoResult:
    config: DemoConfig
    reliable: RunResult
    plain: RunResult | None
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """The reliable run lost, duplicated and reordered nothing."""
        return self.reliable.clean

    def summary(self) -> str:
        """One line that puts the two runs side by side."""
        parts = [summary_line("reliable", self.reliable)]
        if self.plain is not None:
            parts.append(summary_line("plain UDP", self.plain))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "config": self.config.to_dict(),
            "reliable": self.reliable.to_dict(),
            "plain": None if self.plain is None else self.plain.to_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
        }


def percent(part: int, whole: int) -> str:
    """A share that never rounds up to 100% (or down to 0%) unless it is exactly that."""
    if whole == 0 or part == whole:
        return "100%"
    if part == 0:
        return "0%"
    share = part / whole * 100
    return f"{min(max(math.floor(share * 10) / 10, 0.1), 99.9):.1f}%"


def summary_line(label: str, run: RunResult) -> str:
    return (
        f"{label}: {percent(run.delivered, run.expected)} delivered, "
        f"{run.duplicates} dup, {run.out_of_order} out of order"
    )


# --- what the bots received -----------------------------------------------------------------


@dataclass
class Progress:
    sent: int = 0
    unique: set[tuple[int, int]] = field(default_factory=set)
    refused: int = 0
    connection_lost: int = 0
    history_gaps: int = 0


class Recorder:
    """Send times and deliveries of one run, written from many threads."""

    def __init__(self, members: int, messages: int) -> None:
        self.members = members
        self.messages = messages
        self._lock = threading.Lock()
        self._send_ns: dict[tuple[int, int], int] = {}
        self._logs = [DeliveryLog(member=i) for i in range(members)]
        self._progress = [Progress() for _ in range(members)]

    def will_send(self, sender: int, msg_id: int) -> None:
        """Called just before the send call: latency counts from here."""
        now = time.monotonic_ns()
        with self._lock:
            self._send_ns[(sender, msg_id)] = now

    def did_send(self, sender: int) -> None:
        with self._lock:
            self._progress[sender].sent += 1

    def delivered(self, receiver: int, text: str) -> None:
        recv_ns = time.monotonic_ns()
        parsed = parse_text(text)
        with self._lock:
            log = self._logs[receiver]
            if parsed is None:
                log.malformed += 1
                return
            log.senders.append(parsed[0])
            log.msg_ids.append(parsed[1])
            log.send_ns.append(self._send_ns.get(parsed, recv_ns))
            log.recv_ns.append(recv_ns)
            if parsed[0] != receiver and 0 <= parsed[1] < self.messages:
                self._progress[receiver].unique.add(parsed)

    def count(self, receiver: int, what: str) -> None:
        with self._lock:
            progress = self._progress[receiver]
            setattr(progress, what, getattr(progress, what) + 1)

    def sent(self, member: int) -> int:
        with self._lock:
            return self._progress[member].sent

    def received(self, member: int) -> int:
        with self._lock:
            return len(self._progress[member].unique)

    def complete(self) -> bool:
        expected = (self.members - 1) * self.messages
        with self._lock:
            return all(len(p.unique) == expected for p in self._progress)

    def unreached_without(self, cut_off: set[int], since_ns: int) -> int:
        """Deliveries that members ``cut_off`` would have missed had they stayed cut off from
        ``since_ns`` on: every line sent from then on by one of them, or to one of them."""
        with self._lock:
            sent = [sender for (sender, _), at in self._send_ns.items() if at >= since_ns]
        others = self.members - 1
        inside = len(cut_off)
        return sum(others if s in cut_off else inside for s in sent)

    def snapshot(self) -> tuple[list[DeliveryLog], list[Progress]]:
        with self._lock:
            logs = [DeliveryLog.from_dict(log.to_dict()) for log in self._logs]
            progress = [
                Progress(p.sent, set(p.unique), p.refused, p.connection_lost, p.history_gaps)
                for p in self._progress
            ]
        return logs, progress


# --- the verdicts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkNumbers:
    """What a bot's link says about itself (no retransmissions or round trip over plain UDP)."""

    retransmissions: int | None
    srtt_ms: float | None
    reconnects: int


def verdicts(
    mode: str,
    config: DemoConfig,
    recorder: Recorder,
    numbers: Sequence[LinkNumbers],
    relay_retx: Sequence[int | None],
    duration: float,
    send_errors: tuple[str, ...],
) -> RunResult:
    logs, progress = recorder.snapshot()
    intended = dict.fromkeys(range(config.members), config.messages)
    members = []
    for i, (log, p) in enumerate(zip(logs, progress, strict=True)):
        s = analyze([log], intended)
        latency = s.latency_ms
        link = numbers[i]
        members.append(
            MemberVerdict(
                name=bot_name(i),
                sent=p.sent,
                expected=s.expected,
                delivered=s.delivered,
                duplicates=s.duplicates,
                out_of_order=s.out_of_order,
                lost=s.lost,
                retransmissions=link.retransmissions,
                relay_retransmissions=relay_retx[i],
                srtt_ms=link.srtt_ms,
                latency_p50_ms=None if latency is None else round(latency.p50, 2),
                latency_p99_ms=None if latency is None else round(latency.p99, 2),
                reconnects=max(link.reconnects, p.connection_lost),
                refused=p.refused,
                history_gaps=p.history_gaps,
            )
        )
    return RunResult(mode, tuple(members), analyze(logs, intended), duration, send_errors)

