"""The team's targets for udpchat against a sweep's results: the promises (exactly once and
in order under loss, latency under loss, no saturation) and, from `udpchat_bench.cost_targets`,
the costs (latency and wire bytes at 0% loss, CPU against ENet, fan-out latency).

Reported, never asserted: a missed target is a finding, not a failure. Each says the command
that measures it again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from udpchat_bench.sweep import PLAIN_UDP, UDPCHAT, SweepResults, highest_unsaturated

__all__ = ["Target", "evaluate_targets", "reference_command", "rounds_option"]


@dataclass(frozen=True)
class Target:
    """One of the team's targets for udpchat, and what this run measured for it."""

    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run
    command: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reference_command(members: int, loss: float, results: SweepResults) -> str:
    cfg = results.config
    parts = ["udpchat bench", f"--loss {loss:g}%", f"--members {members}"]
    if cfg.messages != 400:
        parts.append(f"--messages {cfg.messages}")
    if not results.loss_method.kernel:
        parts.append("--no-kernel-loss")
    return " ".join(parts + rounds_option(results))


def rounds_option(results: SweepResults) -> list[str]:
    """What repeats the rounds a figure is the median of."""
    rounds = results.config.rounds
    return [f"--rounds {rounds}"] if rounds > 1 else []


def evaluate_targets(results: SweepResults) -> list[Target]:
    """The team's targets against this run, for udpchat in the smallest room measured."""
    members = min(results.config.members)
    targets: list[Target] = []

    p = results.point(UDPCHAT, members, 20.0)
    cmd = reference_command(members, 20.0, results)
    if p is None or not p.ok or p.result is None or p.result.stats is None:
        targets.append(
            Target("exactly once, in order, 20% loss", "100%", "not measured", None, cmd)
        )
    else:
        s = p.result.stats
        met = s.delivered == s.expected and s.duplicates == 0 and s.out_of_order == 0
        measured = (
            f"{s.delivery_ratio:.2%} delivered, {s.duplicates} duplicates,"
            f" {s.out_of_order} out of order"
        )
        targets.append(Target("exactly once, in order, 20% loss", "100%", measured, met, cmd))

    for loss, limit in ((10.0, 15.0), (20.0, 60.0)):
        p = results.point(UDPCHAT, members, loss)
        cmd = reference_command(members, loss, results)
        name = f"latency p99, {loss:g}% loss"
        lat = None if p is None or p.result is None or p.result.stats is None else p.result.stats
        summary = None if lat is None else lat.latency_ms
        if summary is None:
            targets.append(Target(name, f"<= {limit:g} ms", "not measured", None, cmd))
        else:
            targets.append(
                Target(name, f"<= {limit:g} ms", f"{summary.p99:.1f} ms", summary.p99 <= limit, cmd)
            )

    p = results.point(UDPCHAT, members, 10.0)
    wire = None if p is None else p.wire_per_byte()
    cmd = reference_command(members, 10.0, results)
    name = "wire bytes per delivered payload byte, 10% loss"
    if wire is None:
        targets.append(Target(name, "<= 3.0", "not measured", None, cmd))
    else:
        targets.append(Target(name, "<= 3.0", f"{wire:.2f}", wire <= 3.0, cmd))

    cfg = results.config
    # Fan-out runs in every bench, in a room of its own size whatever --members says: the
    # shortest full command that repeats it sweeps one loss rate and one room.
    fan_cmd = " ".join(
        [
            "udpchat bench --loss 0% --members 2",
            *rounds_option(results),
            f"(fan-out: {cfg.fanout_members} members, in every run)",
        ]
    )
    name = f"relay CPU per delivery vs plain UDP, {cfg.fanout_members} members, 0% loss"
    lowest = min(cfg.fanout_rates) if cfg.fanout_rates else None
    ours = None if lowest is None else results.fanout_result(UDPCHAT, lowest)
    base = None if lowest is None else results.fanout_result(PLAIN_UDP, lowest)
    if (
        ours is None
        or base is None
        or ours.relay_cpu_us_per_delivery is None
        or not base.relay_cpu_us_per_delivery
    ):
        targets.append(Target(name, "<= 1.5x", "not measured", None, fan_cmd))
    else:
        ratio = ours.relay_cpu_us_per_delivery / base.relay_cpu_us_per_delivery
        measured = (
            f"{ratio:.2f}x ({ours.relay_cpu_us_per_delivery:.1f} vs"
            f" {base.relay_cpu_us_per_delivery:.1f} us, at {lowest:g} msg/s)"
        )
        targets.append(Target(name, "<= 1.5x", measured, ratio <= 1.5, fan_cmd))

    name = "no saturation below 8,000 offered messages/s"
    runs = sorted(
        (f for f in results.fanout if f.system == UDPCHAT and f.ok and f.saturated is not None),
        key=lambda f: f.rate,
    )
    if not runs:
        targets.append(Target(name, ">= 8000 msg/s", "not measured", None, fan_cmd))
    else:
        highest = highest_unsaturated(runs)
        measured = (
            "saturated at every rate tried"
            if highest is None
            else f"highest unsaturated {highest:g} msg/s"
        )
        tried = ", ".join(f"{f.rate:g}" for f in runs)
        kept_up: bool | None = None
        if runs[-1].rate >= 8000:
            kept_up = all(not f.saturated for f in runs if f.rate <= 8000)
        targets.append(
            Target(name, ">= 8000 msg/s", f"{measured} (tried {tried})", kept_up, fan_cmd)
        )
    from udpchat_bench.cost_targets import cost_targets  # it builds Targets: imported late

    return targets + cost_targets(results, fan_cmd)
