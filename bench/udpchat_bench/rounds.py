"""Several rounds of the same measurement, combined into one result per point.

On a shared machine a single run's CPU and latency figures move by 15% or more from one run
to the next, more than the gaps the cost targets are about. ``udpchat bench --rounds N``
repeats the whole sweep N times, every system at every point in each round (so that slow
drifts of the machine fall on all of them), and reports one result per point made of:

* medians over the rounds for what is a cost (latency percentiles, wire bytes per payload
  byte, CPU per delivery, the deliveries achieved a second), each figure its own median
  (with an even number of rounds, the mean of the middle two: an odd one reports figures
  that were measured);
* the worst for what is a promise, so that one bad round is never hidden by good ones: the
  round that delivered least (its delivered and lost counts, and what was delivered to each
  receiver), the most duplicates and out of order of any round, the longest delivery;
* saturated when the median of the deliveries a second is below the harness's threshold,
  as a single run is; failed when any round failed (that round is kept as it is, with its
  error, so the failure is reported).

Totals are made to agree with the medians (CPU seconds are the median per delivery times
the deliveries counted); what is not combined (the byte counts, the processes' own reports)
is the worst round's. The rounds themselves are kept as they were measured, for the JSON
file.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from udpchat.demo.delivery import DeliveryStats, LatencySummary
from udpchat_bench.harness import FanoutResult, RunResult, is_saturated

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
            count=worst.latency_ms.count if worst.latency_ms else worst.delivered,
            p50=mid(lambda lat: lat.p50),
            p90=mid(lambda lat: lat.p90),
            p99=mid(lambda lat: lat.p99),
            max=max(lat.max for lat in latencies),
            mean=mid(lambda lat: lat.mean),
        )
    return replace(
        worst,  # delivered, lost: the round that delivered least
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
    if failed is not None:
        return failed
    return runs[0] if len(runs) == 1 else None


def _worst_and_combined(runs: Sequence[R]) -> tuple[R, DeliveryStats]:
    """The worst round (whose promised figures are kept) and the rounds' combined stats."""
    worst = _worst(runs)
    assert worst.stats is not None
    return worst, _combined_stats(worst.stats, [r.stats for r in runs if r.stats is not None])


def _per_delivery(runs: Sequence[R], seconds: Callable[[R], float | None]) -> float | None:
    """The median over the rounds of ``seconds`` a delivery."""
    return median_of(
        [
            None
            if (cpu := seconds(r)) is None or r.stats is None or not r.stats.delivered
            else cpu / r.stats.delivered
            for r in runs
        ]
    )


def _total(per_delivery: float | None, stats: DeliveryStats) -> float | None:
    """CPU seconds that agree with ``per_delivery`` over the deliveries counted."""
    return None if per_delivery is None else per_delivery * stats.delivered


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
        relay_cpu_s=_total(_per_delivery(runs, lambda r: r.relay_cpu_s), stats),
        members_cpu_s=_total(_per_delivery(runs, lambda r: r.members_cpu_s), stats) or 0.0,
        wall_s=sum(r.wall_s for r in runs),
    )


def combine_fanout(runs: Sequence[FanoutResult]) -> FanoutResult:
    """One fan-out run standing for ``runs`` (the same system at the same rate)."""
    alone = _as_is(runs)
    if alone is not None:
        return alone
    worst, stats = _worst_and_combined(runs)
    relay_us = _median_field(runs, lambda r: r.relay_cpu_us_per_delivery)
    achieved = _median_field(runs, lambda r: r.achieved_deliveries_per_s)
    return replace(
        worst,
        stats=stats,
        achieved_deliveries_per_s=achieved,
        sent_per_s=_median_field(runs, lambda r: r.sent_per_s),
        saturated=is_saturated(achieved, worst.offered_deliveries_per_s),  # as for one run
        relay_cpu_s=_total(None if relay_us is None else relay_us * 1e-6, stats),
        relay_cpu_us_per_delivery=relay_us,
        members_cpu_s=_total(_per_delivery(runs, lambda r: r.members_cpu_s), stats) or 0.0,
        senders_cpu_s=_total(_per_delivery(runs, lambda r: r.senders_cpu_s), stats) or 0.0,
        wall_s=sum(r.wall_s for r in runs),
    )
