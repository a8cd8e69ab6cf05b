"""Several rounds of the same measurement, combined into one result per point.

On a shared machine a single run's CPU and latency figures move by 15% or more from one run
to the next, more than the gaps the cost targets are about. ``udpchat bench --rounds N``
repeats the whole sweep N times, every system at every point in each round (so that slow
drifts of the machine fall on all of them), and reports one result per point made of:

* medians over the rounds for what is a cost (latency percentiles, wire bytes, CPU, the
  deliveries achieved a second), each figure its own median;
* the worst round for what is a promise (delivered, duplicates, out of order, the longest
  delivery), so that one bad round is never hidden by good ones;
* saturated when most rounds were; failed when any round failed (that round is kept, with
  its error, so the failure is reported).

The rounds themselves are kept as they were measured, for the JSON file.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from udpchat.demo.delivery import DeliveryStats, LatencySummary
from udpchat_bench.harness import FanoutResult, RunResult

__all__ = ["combine_fanout", "combine_reference", "median_of"]

R = TypeVar("R", RunResult, FanoutResult)


def median_of(values: Sequence[float | None]) -> float | None:
    """The median of the values that were measured; None when none was."""
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured else None


def _median_field(runs: Sequence[R], get: Callable[[R], float | None]) -> float | None:
    return median_of([get(r) for r in runs])


def _shortfall(stats: DeliveryStats | None) -> tuple[int, int, int]:
    """Sorts the worst round first: the most missing, then duplicated, then out of order."""
    assert stats is not None  # a run without stats failed, and is never combined
    return (stats.delivered - stats.expected, -stats.duplicates, -stats.out_of_order)


def _worst(runs: Sequence[R]) -> R:
    return min(runs, key=lambda r: _shortfall(r.stats))


def _combined_stats(worst: DeliveryStats, stats: Sequence[DeliveryStats]) -> DeliveryStats:
    """Medians of the latency percentiles; the worst round of everything promised."""
    latencies = [s.latency_ms for s in stats if s.latency_ms is not None]
    latency: LatencySummary | None = None
    if latencies:

        def mid(get: Callable[[LatencySummary], float]) -> float:
            return statistics.median(get(lat) for lat in latencies)

        latency = LatencySummary(
            count=round(mid(lambda lat: lat.count)),
            p50=mid(lambda lat: lat.p50),
            p90=mid(lambda lat: lat.p90),
            p99=mid(lambda lat: lat.p99),
            max=max(lat.max for lat in latencies),
            mean=mid(lambda lat: lat.mean),
        )
    return replace(
        worst,
        duplicates=max(s.duplicates for s in stats),
        out_of_order=max(s.out_of_order for s in stats),
        unexpected=max(s.unexpected for s in stats),
        malformed=max(s.malformed for s in stats),
        latency_ms=latency,
    )


def _as_is(runs: Sequence[R]) -> R | None:
    """The run that stands for ``runs`` as it is: the only one, or the first that failed."""
    if not runs:
        raise ValueError("no runs to combine")
    failed = next((r for r in runs if not r.ok or r.stats is None), None)
    return failed if failed is not None or len(runs) > 1 else runs[0]


def _worst_and_combined(runs: Sequence[R]) -> tuple[R, DeliveryStats]:
    """The worst round (whose promised figures are kept) and the rounds' combined stats."""
    worst = _worst(runs)
    assert worst.stats is not None
    return worst, _combined_stats(worst.stats, [r.stats for r in runs if r.stats is not None])


def combine_reference(runs: Sequence[RunResult]) -> RunResult:
    """One reference run standing for ``runs`` (the same system at the same point)."""
    alone = _as_is(runs)
    if alone is not None:
        return alone
    worst, stats = _worst_and_combined(runs)
    return replace(
        worst,
        stats=stats,
        wire_per_payload_byte=_median_field(runs, lambda r: r.wire_per_payload_byte),
        kernel_wire_per_payload_byte=_median_field(runs, lambda r: r.kernel_wire_per_payload_byte),
        relay_cpu_s=_median_field(runs, lambda r: r.relay_cpu_s),
        members_cpu_s=statistics.median(r.members_cpu_s for r in runs),
        wall_s=sum(r.wall_s for r in runs),
    )


def combine_fanout(runs: Sequence[FanoutResult]) -> FanoutResult:
    """One fan-out run standing for ``runs`` (the same system at the same rate)."""
    alone = _as_is(runs)
    if alone is not None:
        return alone
    worst, stats = _worst_and_combined(runs)
    # members' CPU is read per delivery: the median of that, over the deliveries reported
    per_delivery = median_of(
        [
            r.members_cpu_s / r.stats.delivered if r.stats and r.stats.delivered else None
            for r in runs
        ]
    )
    saturated = [r.saturated for r in runs if r.saturated is not None]
    return replace(
        worst,
        stats=stats,
        achieved_deliveries_per_s=_median_field(runs, lambda r: r.achieved_deliveries_per_s),
        sent_per_s=_median_field(runs, lambda r: r.sent_per_s),
        saturated=2 * sum(saturated) > len(saturated) if saturated else None,
        relay_cpu_s=_median_field(runs, lambda r: r.relay_cpu_s),
        relay_cpu_us_per_delivery=_median_field(runs, lambda r: r.relay_cpu_us_per_delivery),
        members_cpu_s=0.0 if per_delivery is None else per_delivery * stats.delivered,
        senders_cpu_s=statistics.median(r.senders_cpu_s for r in runs),
        wire_bytes=round(statistics.median(r.wire_bytes for r in runs)),
        wall_s=sum(r.wall_s for r in runs),
    )
