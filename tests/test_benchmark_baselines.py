"""Tiny real runs of each baseline on loopback: the harness must produce complete, sane
results. Speed is never asserted, only that everything was measured."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from udpchat_bench.harness import run_fanout, run_reference
from udpchat_bench.netns import kernel_loss_available
from udpchat_bench.systems import SYSTEMS, System, get_system
from udpchat_bench.traffic import TrafficSpec

pytestmark = pytest.mark.bench

BASELINES = ["plain-udp", "tcp-relay"]
TINY = TrafficSpec(messages=20, size=100, rate=200.0, receivers=2, drain_s=2.0)


def test_registry_resolves_baselines() -> None:
    for name in BASELINES:
        assert name in SYSTEMS
        system = get_system(name)
        assert isinstance(system, System)
        assert system.name == name
    with pytest.raises(KeyError):
        get_system("no-such-system")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("system", BASELINES)
def test_reference_run_delivers_everything(system: str) -> None:
    result = run_reference(system, TINY)
    assert result.ok, result.error
    assert result.stats is not None
    assert result.delivered_per_receiver == [20, 20]
    assert (result.stats.lost, result.stats.duplicates, result.stats.unexpected) == (0, 0, 0)
    assert result.stats.latency_ms is not None
    assert result.stats.latency_ms.count == 40
    assert result.stats.latency_ms.p50 > 0
    assert result.relay is not None and result.relay.cpu_s > 0
    assert len(result.members) == 3
    assert all(m.cpu_s > 0 for m in result.members)
    sender, *receivers = sorted(result.members, key=lambda m: m.member or 0)
    assert sender.meter.bytes_sent >= 20 * TINY.size
    assert all(r.meter.bytes_received >= 20 * TINY.size for r in receivers)
    assert result.relay.meter.bytes_received >= 20 * TINY.size
    assert result.relay.meter.bytes_sent >= 40 * TINY.size
    # Every delivered byte crossed the wire at least twice (sender->relay->receiver).
    assert result.wire_per_payload_byte is not None and result.wire_per_payload_byte > 1.5
    assert json.loads(result.to_json())["stats"]["delivered"] == 40


@pytest.mark.timeout(60)
def test_tcp_relay_nodelay_option() -> None:
    result = run_reference("tcp-relay", TINY, options={"nodelay": True})
    assert result.ok, result.error
    assert result.options == {"nodelay": True}
    assert result.delivered_per_receiver == [20, 20]


@pytest.mark.timeout(60)
def test_simulated_loss_on_plain_udp() -> None:
    result = run_reference("plain-udp", replace(TINY, drain_s=0.5), loss=50.0)
    assert result.ok, result.error
    assert result.loss_mode == "simulated"
    assert result.stats is not None
    # Each delivery survives two 50% drops: expect 25% of 40, far from 0 and from 40.
    assert 0 < result.stats.delivered < 30


def test_simulated_loss_refused_for_tcp() -> None:
    with pytest.raises(ValueError, match="kernel"):
        run_reference("tcp-relay", TINY, loss=10.0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("system", BASELINES)
def test_fanout_smoke(system: str) -> None:
    result = run_fanout(system, members=4, rate=200.0, duration=1.0, drain_s=1.0)
    assert result.ok, result.error
    assert result.stats is not None
    assert result.offered_deliveries_per_s == 600.0
    assert result.stats.expected == 3 * 200
    assert result.stats.delivered > 0
    assert result.achieved_deliveries_per_s is not None and result.achieved_deliveries_per_s > 0
    assert result.relay_cpu_us_per_delivery is not None and result.relay_cpu_us_per_delivery > 0
    assert result.saturated is not None
    assert json.loads(result.to_json())["members"] == 4


def test_failed_process_is_reported_not_raised() -> None:
    result = run_reference("tcp-relay", TINY, options={"nodelay": "yes"})
    assert not result.ok
    assert result.error is not None and "nodelay" in result.error
    assert result.stats is None


@pytest.mark.timeout(120)
def test_kernel_loss() -> None:
    available, reason = kernel_loss_available()
    if not available:
        pytest.skip(reason)
    udp = run_reference(
        "plain-udp", TrafficSpec(messages=40, rate=200.0, drain_s=1.0), loss=50.0, kernel_loss=True
    )
    assert udp.ok, udp.error
    assert udp.loss_mode == "kernel"
    assert udp.stats is not None
    # 50% each way: about 25% of the 80 deliveries survive; far from none and from all.
    assert 2 <= udp.stats.delivered <= 50
    assert udp.kernel is not None and udp.kernel["udp_out_datagrams"] > 0
    # For UDP the user-space wire estimate is exact: the kernel agrees.
    assert udp.wire_per_payload_byte == pytest.approx(udp.kernel_wire_per_payload_byte)

    # TCP at 20% each way: a segment is lost or unacknowledged about a third of the time,
    # so retransmissions are certain, but seven in a row (RTO backoff past the 60 s drain)
    # are not (at 50%, one receiver in a loaded run waited out the drain with 1 of 10).
    tcp = run_reference(
        "tcp-relay", TrafficSpec(messages=10, rate=200.0, drain_s=60.0), loss=20.0, kernel_loss=True
    )
    assert tcp.ok, tcp.error
    assert tcp.stats is not None
    assert tcp.delivered_per_receiver == [10, 10]
    assert tcp.kernel is not None and tcp.kernel["tcp_retransmitted_segments"] > 0
