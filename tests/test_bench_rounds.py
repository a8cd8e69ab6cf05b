"""``udpchat bench --rounds``: several rounds of a sweep reported as one, with the medians of
what things cost and the worst round of what was delivered."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from udpchat.cli import app
from udpchat.demo.delivery import DeliveryStats, LatencySummary
from udpchat_bench.harness import FanoutResult, RunResult
from udpchat_bench.rounds import combine_fanout, combine_reference, median_of
from udpchat_bench.sweep import (
    PLAIN_UDP,
    UDPCHAT,
    SweepConfig,
    run_sweep,
)
from udpchat_bench.targets import evaluate_targets
from udpchat_bench.traffic import TrafficSpec

pytestmark = pytest.mark.bench


def stats(
    delivered: int, p50: float, p99: float, most: float, duplicates: int = 0
) -> DeliveryStats:
    return DeliveryStats(
        expected=100,
        delivered=delivered,
        duplicates=duplicates,
        out_of_order=0,
        lost=100 - delivered,
        unexpected=0,
        malformed=0,
        latency_ms=LatencySummary(delivered, p50, p99, p99, most, p50),
        first_send_ns=0,
        last_recv_ns=1,
    )


def reference(
    delivered: int, p99: float, wire: float, *, ok: bool = True, relay_s: float = 0.1
) -> RunResult:
    return RunResult(
        system=UDPCHAT,
        spec=TrafficSpec(messages=100, receivers=1),
        loss_percent=10.0,
        loss_mode="kernel",
        options={},
        ok=ok,
        error=None if ok else "a member process died",
        stats=stats(delivered, p99 / 4, p99, p99 * 2) if ok else None,
        delivered_per_receiver=[delivered],
        relay=None,
        members=[],
        sender_max_lag_ms=None,
        wire_bytes=round(wire * 100 * 100),
        delivered_payload_bytes=100 * 100,
        wire_per_payload_byte=wire,
        kernel_wire_per_payload_byte=wire,
        relay_cpu_s=relay_s,
        members_cpu_s=2 * relay_s,
        kernel=None,
        wall_s=8.0,
    )


def fanout(
    relay_us: float, members_us: float, delivered: int, saturated: bool, *, ok: bool = True
) -> FanoutResult:
    return FanoutResult(
        system=UDPCHAT,
        members=10,
        senders=1,
        rate=1000.0,
        duration_s=2.0,
        size=100,
        options={},
        ok=ok,
        error=None if ok else "the relay process died",
        stats=stats(delivered, 0.5, relay_us / 10, relay_us),
        offered_deliveries_per_s=9000.0,
        achieved_deliveries_per_s=float(delivered),  # over one second
        sent_per_s=1000.0,
        saturated=saturated,
        relay_cpu_s=relay_us * delivered * 1e-6,
        relay_cpu_us_per_delivery=relay_us,
        wire_bytes=1000,
        wall_s=5.0,
        members_cpu_s=members_us * delivered * 1e-6,
        senders_cpu_s=members_us * delivered * 1e-7,
    )


def test_the_median_is_of_what_was_measured() -> None:
    assert median_of([3.0, None, 1.0, 2.0]) == 2.0
    assert median_of([None, None]) is None


def test_reference_rounds_give_the_median_cost_and_the_worst_delivery() -> None:
    runs = [
        reference(100, 9.0, 4.4, relay_s=0.30),
        reference(99, 30.0, 4.6, relay_s=0.10),
        reference(100, 12.0, 4.5, relay_s=0.20),
    ]
    combined = combine_reference(runs)
    assert combined.stats is not None and combined.stats.latency_ms is not None
    assert combined.stats.delivered == 99  # one round lost a message: reported, not averaged
    assert combined.delivered_per_receiver == [99]  # the worst round's own figures
    assert combined.stats.latency_ms.p99 == 12.0
    assert combined.stats.latency_ms.max == 60.0  # the longest wait of any round
    assert combined.stats.latency_ms.count == 99  # what the latencies are of: the worst round's
    assert combined.wire_per_payload_byte == 4.5
    # CPU: the median a delivery (2 ms), over what the combined result says was delivered
    assert combined.relay_cpu_s == pytest.approx(0.002 * 99)
    assert combined.members_cpu_s == pytest.approx(0.004 * 99)
    assert combined.wall_s == 24.0
    duplicated = combine_reference(
        [reference(100, 9.0, 4.4), replace(runs[0], stats=stats(100, 1.0, 9.0, 18.0, duplicates=2))]
    )
    assert duplicated.stats is not None and duplicated.stats.duplicates == 2


def test_a_failed_round_is_reported_not_outvoted() -> None:
    failed = reference(0, 0.0, 0.0, ok=False)
    combined = combine_reference([reference(100, 9.0, 4.4), failed, reference(100, 9.0, 4.4)])
    assert combined is failed and not combined.ok
    with pytest.raises(ValueError):
        combine_reference([])


def test_fanout_rounds_give_median_cpu_per_delivery_and_saturation_as_one_run_would() -> None:
    runs = [
        fanout(40.0, 150.0, 9000, False),
        fanout(55.0, 120.0, 8400, True),
        fanout(47.0, 170.0, 9000, False),
    ]
    combined = combine_fanout(runs)
    assert combined.relay_cpu_us_per_delivery == 47.0
    assert combined.stats is not None and combined.stats.delivered == 8400
    # totals agree with the figures a delivery, over what was delivered
    delivered = combined.stats.delivered
    assert combined.relay_cpu_s == pytest.approx(47.0e-6 * delivered)
    assert combined.members_cpu_s / delivered * 1e6 == pytest.approx(150.0)
    assert combined.senders_cpu_s / delivered * 1e6 == pytest.approx(15.0)
    assert combined.achieved_deliveries_per_s == 9000.0
    assert combined.saturated is False  # one round of three, and not the median
    # two rounds: the median of 9,000 and 8,000 a second is below 95% of the 9,000 offered
    pair = combine_fanout([fanout(40.0, 150.0, 9000, False), fanout(55.0, 120.0, 8000, True)])
    assert pair.achieved_deliveries_per_s == 8500.0 and pair.saturated is True


def test_a_failed_fanout_round_is_reported_as_it_is() -> None:
    failed = fanout(40.0, 150.0, 9000, False, ok=False)
    assert combine_fanout([fanout(40.0, 150.0, 9000, False), failed]) is failed


TINY = SweepConfig(
    losses=(0.0,),
    members=(2,),
    messages=10,
    rate=100.0,
    systems=(UDPCHAT, PLAIN_UDP),
    kernel_loss=False,
    fanout_members=3,
    fanout_rates=(200.0,),
    fanout_seconds=0.3,
    fanout_systems=(UDPCHAT,),
)
"""A sweep of a few seconds: two systems at one point, one fan-out rate."""


@pytest.mark.timeout(120)
def test_a_sweep_of_two_rounds_reports_each_point_once_and_keeps_both_rounds() -> None:
    said: list[str] = []
    results = run_sweep(replace(TINY, rounds=2), progress=said.append)
    assert "round 2 of 2" in said
    assert [(p.system, p.members, p.loss_percent) for p in results.reference] == [
        (UDPCHAT, 2, 0.0),
        (PLAIN_UDP, 2, 0.0),
    ]
    assert [(f.system, f.rate) for f in results.fanout] == [(UDPCHAT, 200.0)]
    assert len(results.rounds) == 2
    for reference_round, fanout_round in results.rounds:
        assert len(reference_round) == 2 and len(fanout_round) == 1
    ours = results.point(UDPCHAT, 2, 0.0)
    assert ours is not None and ours.result is not None and ours.result.stats is not None
    assert ours.result.stats.delivered == ours.result.stats.expected == 10
    data = json.loads(json.dumps(results.to_dict()))
    assert len(data["rounds"]) == 2 and data["config"]["rounds"] == 2
    # the targets read the combined points, and say how to measure them again
    by_name = {t.name: t for t in evaluate_targets(results)}
    latency = by_name["latency p50 / p99, 0% loss"]
    summary = ours.result.stats.latency_ms
    assert summary is not None
    assert latency.measured == f"{summary.p50:.2f} / {summary.p99:.2f} ms"
    assert latency.command.endswith("--rounds 2")
    assert "--rounds 2 (fan-out" in by_name["fan-out p99 at 1,000 / 4,000 / 8,000 msg/s"].command


def test_one_round_keeps_no_second_copy_of_itself() -> None:
    config = replace(TINY, systems=(PLAIN_UDP,), fanout_rates=())
    results = run_sweep(config)
    assert len(results.reference) == 1 and results.rounds == []
    assert results.to_dict()["rounds"] == []


def test_rounds_must_be_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rounds"):
        SweepConfig(rounds=0)
    result = CliRunner().invoke(app, ["bench", "--rounds", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == "udpchat: --rounds: expected at least 1, got 0"


def test_the_report_says_how_rounds_were_combined() -> None:
    import io

    from rich.console import Console

    from udpchat_bench.report import render
    from udpchat_bench.sweep import LossMethod, SweepResults

    for rounds, said in ((1, False), (3, True)):
        results = SweepResults(
            SweepConfig(rounds=rounds, fanout_rates=()), LossMethod(True, "kernel loss"), "x"
        )
        buffer = io.StringIO()
        render(results, Console(file=buffer, width=80, color_system=None))
        text = " ".join(buffer.getvalue().split())
        assert ("of 3 rounds of the whole sweep" in text) is said
        assert ("got is the round that delivered least" in text) is said
