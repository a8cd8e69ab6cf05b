"""The cost targets: udpchat at 0% loss and on the wire against ENet and plain UDP, the
rows `udpchat bench` reports beside the loss targets (`udpchat_bench.targets.evaluate_targets`).

* 0% loss latency, p50 <= 0.5 ms and p99 <= 1.0 ms (reference traffic);
* wire bytes per delivered payload byte at 0% loss <= 2.6;
* relay and members' CPU per delivery within 2x ENet's at each fan-out rate up to 4,000
  msg/s (n/a without pyenet: `pip install pyenet`);
* fan-out p99 <= 1, 2 and 5 ms at 1,000, 4,000 and 8,000 msg/s.

Reported, never asserted, like every target of the sweep.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from udpchat_bench.harness import FanoutResult
    from udpchat_bench.sweep import SweepResults
    from udpchat_bench.targets import Target

P50_MS, P99_MS = 0.5, 1.0
WIRE_NO_LOSS = 2.6
CPU_VS_ENET = 2.0
CPU_RATES = (200.0, 1000.0, 4000.0)
FANOUT_P99_MS = {1000.0: 1.0, 4000.0: 2.0, 8000.0: 5.0}


def cost_targets(results: SweepResults, fan_cmd: str) -> list[Target]:
    """The cost targets against this run, for udpchat in the smallest room measured."""
    from udpchat_bench.sweep import ENET, UDPCHAT
    from udpchat_bench.targets import Target, reference_command

    members = min(results.config.members)
    out: list[Target] = []
    p = results.point(UDPCHAT, members, 0.0)
    cmd = reference_command(members, 0.0, results)
    stats = None if p is None or p.result is None else p.result.stats
    lat = None if stats is None else stats.latency_ms
    name, goal = "latency p50 / p99, 0% loss", f"<= {P50_MS:g} / <= {P99_MS:g} ms"
    if lat is None:
        out.append(Target(name, goal, "not measured", None, cmd))
    else:
        met = lat.p50 <= P50_MS and lat.p99 <= P99_MS
        out.append(Target(name, goal, f"{lat.p50:.2f} / {lat.p99:.2f} ms", met, cmd))
    wire = None if p is None else p.wire_per_byte()
    name, goal = "wire bytes per delivered payload byte, 0% loss", f"<= {WIRE_NO_LOSS:g}"
    if wire is None:
        out.append(Target(name, goal, "not measured", None, cmd))
    else:
        out.append(Target(name, goal, f"{wire:.2f}", wire <= WIRE_NO_LOSS, cmd))

    for label, cpu in (("relay", _relay_us), ("members'", _members_us)):
        name = f"{label} CPU per delivery vs ENet, fan-out at {_rates(CPU_RATES)} msg/s"
        cells: list[str] = []
        verdicts: list[bool] = []
        for rate in CPU_RATES:
            ours = cpu(results.fanout_result(UDPCHAT, rate))
            theirs = cpu(results.fanout_result(ENET, rate))
            if ours is None or not theirs:
                cells.append("-")
                continue
            cells.append(f"{ours / theirs:.1f}x ({ours:.0f} vs {theirs:.0f} us)")
            verdicts.append(ours / theirs <= CPU_VS_ENET)
        measured = " / ".join(cells) if verdicts else "not measured (ENet: pip install pyenet)"
        verdict = _verdict(verdicts, len(CPU_RATES))
        out.append(Target(name, f"<= {CPU_VS_ENET:g}x at each", measured, verdict, fan_cmd))

    name = f"fan-out p99 at {_rates(FANOUT_P99_MS)} msg/s"
    goal = " / ".join(f"<= {v:g}" for v in FANOUT_P99_MS.values()) + " ms"
    cells = []
    verdicts = []
    for rate, limit in FANOUT_P99_MS.items():
        f = results.fanout_result(UDPCHAT, rate)
        fan_lat = None if f is None or f.stats is None else f.stats.latency_ms
        if fan_lat is None:
            cells.append("-")
            continue
        cells.append(f"{fan_lat.p99:.1f}")
        verdicts.append(fan_lat.p99 <= limit)
    measured = " / ".join(cells) + " ms" if verdicts else "not measured"
    out.append(Target(name, goal, measured, _verdict(verdicts, len(FANOUT_P99_MS)), fan_cmd))
    return out


def _verdict(verdicts: list[bool], wanted: int) -> bool | None:
    """Met when every point was measured and met; missed when any measured one missed."""
    if not all(verdicts):
        return False
    return True if len(verdicts) == wanted else None


def _rates(rates: Iterable[float]) -> str:
    return " / ".join(f"{r:,.0f}" for r in rates)


def _relay_us(f: FanoutResult | None) -> float | None:
    return None if f is None or not f.ok else f.relay_cpu_us_per_delivery


def _members_us(f: FanoutResult | None) -> float | None:
    if f is None or not f.ok or f.stats is None or not f.stats.delivered:
        return None
    return f.members_cpu_s / f.stats.delivered * 1e6
