"""The ``udpchat bench`` sweep: every system on the same traffic, over loss rates and room
sizes, plus a fan-out load test; results as a table, JSON and a plot.

Systems are interleaved at each point (udpchat, then the plain UDP forwarder, then the TCP
relay), so slow drifts of the machine spread over all of them rather than favouring one.
With ``rounds`` the whole sweep is repeated and each point reported as its rounds combined
(`udpchat_bench.rounds`: medians of the costs, the worst round of delivery).

Loss is real kernel loss (a private network namespace whose loopback drops packets; see
`udpchat_bench.netns`) when this machine allows it, which is fair to TCP. Otherwise it is
simulated in user space by each system on the datagrams it receives, which TCP cannot do:
the TCP relay then runs without loss only.

The results are judged against the team's targets in `udpchat_bench.targets` (reported,
never asserted).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import udpchat
from udpchat_bench.enet_system import available as enet_available
from udpchat_bench.harness import FanoutResult, RunResult, run_fanout, run_reference
from udpchat_bench.netns import kernel_loss_available
from udpchat_bench.rounds import combine_fanout, combine_reference
from udpchat_bench.traffic import TrafficSpec

N = TypeVar("N", int, float)

UDPCHAT = "udpchat"
PLAIN_UDP = "plain-udp"
TCP_RELAY = "tcp-relay"
ENET = "enet"
SYSTEMS = (UDPCHAT, PLAIN_UDP, TCP_RELAY, ENET)
"""ENet is optional (pyenet): without it, its points say why they were not run."""

DRAIN_S: dict[str, float] = {UDPCHAT: 10.0, PLAIN_UDP: 1.0, TCP_RELAY: 30.0, ENET: 10.0}
"""Longest wait for late deliveries under loss, per system: enough for its own repair
(udpchat's retransmissions back off to 1 s; Linux TCP's RTO starts at 200 ms and doubles).
The forwarder repairs nothing, so waiting longer only wastes time. Every wait ends as soon
as each receiver has everything."""
DRAIN_NO_LOSS_S = 2.0

RESULTS_FILE = "results.json"
PLOT_FILE = "bench.png"


@dataclass(frozen=True)
class SweepConfig:
    """What ``udpchat bench`` measures. ``members`` counts everyone in the room (one sender,
    the rest receivers); ``kernel_loss`` None means "when available"."""

    losses: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 30.0)
    members: tuple[int, ...] = (3, 6)
    messages: int = 400
    size: int = 100
    rate: float = 50.0
    systems: tuple[str, ...] = SYSTEMS
    kernel_loss: bool | None = None
    fanout_members: int = 10
    fanout_rates: tuple[float, ...] = (200.0, 1000.0, 4000.0, 8000.0)
    fanout_seconds: float = 2.0
    fanout_systems: tuple[str, ...] = SYSTEMS
    seed: int = 1
    rounds: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if not self.losses or any(not 0 <= x < 100 for x in self.losses):
            raise ValueError("loss rates must be within [0, 100)")
        if not self.members or any(n < 2 for n in self.members):
            raise ValueError("a room needs at least 2 members (a sender and a receiver)")
        if self.messages < 1:
            raise ValueError("messages must be >= 1")
        unknown = set(self.systems) | set(self.fanout_systems)
        unknown -= set(SYSTEMS)
        if unknown:
            raise ValueError(f"unknown systems: {', '.join(sorted(unknown))}")
        if any(r <= 0 for r in self.fanout_rates) or self.fanout_seconds <= 0:
            raise ValueError("fan-out rates and duration must be > 0")
        if self.fanout_rates and self.fanout_members < 2:
            raise ValueError("fan-out needs at least 2 members")

    @classmethod
    def quick(cls) -> SweepConfig:
        """A CI-sized sweep: well under a minute, every system and both kinds of run."""
        return cls(
            losses=(0.0, 20.0),
            members=(3,),
            messages=40,
            rate=100.0,
            fanout_rates=(1000.0,),
            fanout_seconds=0.5,
            fanout_systems=(UDPCHAT, PLAIN_UDP),
            systems=(UDPCHAT, PLAIN_UDP, TCP_RELAY),
        )

    def spec(self, members: int) -> TrafficSpec:
        return TrafficSpec(
            messages=self.messages,
            size=self.size,
            rate=self.rate,
            receivers=members - 1,
            seed=self.seed,
        )


@dataclass(frozen=True)
class LossMethod:
    kernel: bool
    description: str


def choose_loss_method(wanted: bool | None) -> LossMethod:
    """Kernel loss when wanted (or not refused) and available; say plainly what is used."""
    if wanted is False:
        return LossMethod(
            False,
            "user-space loss (asked for): each system drops that share of the datagrams it"
            " receives; TCP cannot, so the TCP relay runs at 0% loss only",
        )
    available, reason = kernel_loss_available()
    if available:
        return LossMethod(
            True,
            "kernel loss: nftables drops that share of all TCP and UDP packets on the loopback"
            " of a private network namespace, each way, for every system alike",
        )
    return LossMethod(
        False,
        f"user-space loss (kernel loss unavailable: {reason}): each system drops that share"
        " of the datagrams it receives; TCP cannot, so the TCP relay runs at 0% loss only",
    )


@dataclass
class ReferencePoint:
    """One system at one (room size, loss) point: a run, or why it was not run."""

    system: str
    members: int
    loss_percent: float
    result: RunResult | None = None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok

    def wire_per_byte(self) -> float | None:
        """The kernel's figure when the run had a namespace of its own, else the estimate."""
        r = self.result
        if r is None or not r.ok:
            return None
        return r.kernel_wire_per_payload_byte or r.wire_per_payload_byte

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "members": self.members,
            "loss_percent": self.loss_percent,
            "skipped": self.skipped,
            "wire_per_payload_byte": self.wire_per_byte(),
            "result": None if self.result is None else self.result.to_dict(),
        }


@dataclass
class SweepResults:
    config: SweepConfig
    loss_method: LossMethod
    command: str
    started: float = field(default_factory=time.time)
    elapsed_s: float = 0.0
    # one per point: the rounds combined (the run itself when there was one round)
    reference: list[ReferencePoint] = field(default_factory=list)
    fanout: list[FanoutResult] = field(default_factory=list)
    # every round as measured, in order, when there were several
    rounds: list[tuple[list[ReferencePoint], list[FanoutResult]]] = field(default_factory=list)

    def point(self, system: str, members: int, loss: float) -> ReferencePoint | None:
        for p in self.reference:
            if (p.system, p.members, p.loss_percent) == (system, members, loss):
                return p
        return None

    def fanout_result(self, system: str, rate: float) -> FanoutResult | None:
        for f in self.fanout:
            if (f.system, f.rate) == (system, rate):
                return f
        return None

    @property
    def failures(self) -> list[str]:
        failed = [
            f"{p.system} {p.members} members {p.loss_percent:g}% loss: {p.result.error}"
            for p in self.reference
            if p.result is not None and not p.result.ok
        ]
        failed += [f"{f.system} fan-out {f.rate:g}/s: {f.error}" for f in self.fanout if not f.ok]
        return failed

    def to_dict(self) -> dict[str, Any]:
        from udpchat_bench.targets import evaluate_targets  # it reads these results

        return {
            "udpchat_version": udpchat.__version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "elapsed_s": self.elapsed_s,
            "command": self.command,
            "host": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
            },
            "config": asdict(self.config),
            "loss_method": {
                "kernel": self.loss_method.kernel,
                "description": self.loss_method.description,
            },
            "systems": sorted({p.system for p in self.reference} | {f.system for f in self.fanout}),
            "reference": [p.to_dict() for p in self.reference],
            "fanout": [f.to_dict() for f in self.fanout],
            "rounds": [
                {"reference": [p.to_dict() for p in ref], "fanout": [f.to_dict() for f in fan]}
                for ref, fan in self.rounds
            ],
            "targets": [t.to_dict() for t in evaluate_targets(self)],
        }


# --- running --------------------------------------------------------------------------------


Progress = Callable[[str], None]


def run_sweep(
    config: SweepConfig,
    *,
    command: str = "udpchat bench",
    progress: Progress | None = None,
) -> SweepResults:
    """Run every reference point and every fan-out rate; never raises for a failed run (it is
    recorded with its error)."""
    say = progress or (lambda _line: None)
    method = choose_loss_method(config.kernel_loss)
    results = SweepResults(config, method, command)
    begun = time.monotonic()
    for index in range(config.rounds):
        if config.rounds > 1:
            say(f"round {index + 1} of {config.rounds}")
        reference, fanout = _one_round(config, method, say)
        results.rounds.append((reference, fanout))
    if config.rounds == 1:
        results.reference, results.fanout = results.rounds.pop()
    else:
        results.reference, results.fanout = _combined(results.rounds)
    results.elapsed_s = time.monotonic() - begun
    return results


def _one_round(
    config: SweepConfig, method: LossMethod, say: Progress
) -> tuple[list[ReferencePoint], list[FanoutResult]]:
    reference: list[ReferencePoint] = []
    fanout: list[FanoutResult] = []
    for members in config.members:
        for loss in config.losses:
            for system in config.systems:
                reference.append(_reference_point(config, method, system, members, loss))
                say(describe_point(reference[-1]))
    for rate in config.fanout_rates:
        for system in config.fanout_systems:
            if system == ENET and not enet_available()[0]:
                say(f"{system:<9} fan-out {rate:g} msg/s: n/a ({enet_available()[1]})")
                continue
            result = run_fanout(
                system,
                members=config.fanout_members,
                rate=rate,
                duration=config.fanout_seconds,
                drain_s=DRAIN_NO_LOSS_S,
                seed=config.seed,
            )
            fanout.append(result)
            say(describe_fanout(result))
    return reference, fanout


def _combined(
    rounds: Sequence[tuple[list[ReferencePoint], list[FanoutResult]]],
) -> tuple[list[ReferencePoint], list[FanoutResult]]:
    """One point per (system, room, loss) and per (system, rate): its rounds combined."""
    points: dict[tuple[str, int, float], list[ReferencePoint]] = {}
    runs: dict[tuple[str, float], list[FanoutResult]] = {}
    for reference, fanout in rounds:
        for p in reference:
            points.setdefault((p.system, p.members, p.loss_percent), []).append(p)
        for f in fanout:
            runs.setdefault((f.system, f.rate), []).append(f)
    reference_out: list[ReferencePoint] = []
    for (system, members, loss), measured in points.items():
        results = [p.result for p in measured if p.result is not None]
        combined = ReferencePoint(system, members, loss, skipped=measured[0].skipped)
        combined.result = combine_reference(results) if results else None
        reference_out.append(combined)
    return reference_out, [combine_fanout(fan) for fan in runs.values()]


def _reference_point(
    config: SweepConfig, method: LossMethod, system: str, members: int, loss: float
) -> ReferencePoint:
    point = ReferencePoint(system, members, loss)
    if loss and not method.kernel and system in (TCP_RELAY, ENET):
        point.skipped = f"n/a (no user-space loss for {system})"
        return point
    if system == ENET and not enet_available()[0]:
        point.skipped = f"n/a ({enet_available()[1]})"
        return point
    drain = DRAIN_S.get(system, DRAIN_NO_LOSS_S) if loss else DRAIN_NO_LOSS_S
    spec = replace(config.spec(members), drain_s=drain)
    point.result = run_reference(system, spec, loss=loss, kernel_loss=method.kernel)
    return point


def describe_point(p: ReferencePoint) -> str:
    head = f"{p.system:<9} {p.members:>2} members {p.loss_percent:>4g}% loss"
    r = p.result
    if r is None:
        return f"{head}: {p.skipped}"
    if not r.ok or r.stats is None:
        return f"{head}: FAILED {r.error}"
    lat = r.stats.latency_ms
    p99 = "-" if lat is None else f"{lat.p99:.1f} ms"
    return f"{head}: {r.stats.delivery_ratio:.1%} delivered, p99 {p99} ({r.wall_s:.0f} s)"


def describe_fanout(f: FanoutResult) -> str:
    head = f"{f.system:<9} fan-out {f.members} members, {f.rate:g} msg/s"
    if not f.ok:
        return f"{head}: FAILED {f.error}"
    cpu = "-" if f.relay_cpu_us_per_delivery is None else f"{f.relay_cpu_us_per_delivery:.1f}"
    return f"{head}: relay {cpu} us CPU/delivery, saturated={f.saturated} ({f.wall_s:.0f} s)"


def highest_unsaturated(runs: Iterable[FanoutResult]) -> float | None:
    """The highest offered rate below which nothing saturated (rates in ascending order)."""
    best: float | None = None
    for f in sorted(runs, key=lambda f: f.rate):
        if f.saturated or not f.ok:
            break
        best = f.rate
    return best


# --- output ---------------------------------------------------------------------------------


def parse_numbers(name: str, text: str, kind: type[N] = float) -> tuple[N, ...]:  # type: ignore[assignment]
    """Parse an option such as ``0,5,10%`` into numbers; ``ValueError`` names the option."""
    try:
        numbers = [float(part.strip().rstrip("%")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated numbers, got {text!r}") from None
    if not numbers:
        raise ValueError(f"{name}: expected at least one number")
    if kind is int and not all(x.is_integer() for x in numbers):
        raise ValueError(f"{name}: expected whole numbers, got {text!r}")
    return tuple(kind(x) for x in numbers)


def write_json(results: SweepResults, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_FILE
    path.write_text(json.dumps(results.to_dict(), indent=1, sort_keys=True) + "\n")
    return path


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


def group_reference(
    points: Sequence[ReferencePoint],
) -> Mapping[tuple[int, float], Mapping[str, ReferencePoint]]:
    groups: dict[tuple[int, float], dict[str, ReferencePoint]] = {}
    for p in points:
        groups.setdefault((p.members, p.loss_percent), {})[p.system] = p
    return groups
