"""ENet as the benchmark's optional reference (pyenet): a tiny real run on loopback, and
what the sweep does without it. Speed is never asserted."""

from __future__ import annotations

import pytest

from udpchat_bench import enet_system
from udpchat_bench.accounting import SocketMeter
from udpchat_bench.harness import run_fanout, run_reference
from udpchat_bench.sweep import ENET, SweepConfig, run_sweep
from udpchat_bench.systems import MemberArgs, UnsupportedOption
from udpchat_bench.traffic import TrafficSpec

pytestmark = pytest.mark.bench

TINY = TrafficSpec(messages=20, size=100, rate=200.0, receivers=2, drain_s=2.0)
needs_pyenet = pytest.mark.skipif(
    not enet_system.available()[0], reason="pyenet is not installed (pip install pyenet)"
)


@needs_pyenet
@pytest.mark.timeout(60)
def test_an_enet_reference_run_delivers_everything_and_counts_its_datagrams() -> None:
    result = run_reference(ENET, TINY)
    assert result.ok, result.error
    assert result.stats is not None
    assert result.delivered_per_receiver == [20, 20]
    assert (result.stats.lost, result.stats.duplicates, result.stats.unexpected) == (0, 0, 0)
    # every message went over the wire at least once, each way, with ENet's own headers
    assert result.wire_per_payload_byte is not None and result.wire_per_payload_byte > 1.0


@needs_pyenet
@pytest.mark.timeout(60)
def test_an_enet_fanout_is_measured() -> None:
    result = run_fanout(ENET, members=3, rate=100.0, duration=0.3)
    assert result.ok, result.error
    assert result.stats is not None and result.stats.delivered == 60
    assert result.relay_cpu_us_per_delivery is not None


def test_enet_refuses_user_space_loss() -> None:
    with pytest.raises(UnsupportedOption):
        enet_system.ENET.connect_member(
            MemberArgs(relay=("127.0.0.1", 9), member=0, loss_percent=5.0), SocketMeter()
        )


def test_without_pyenet_the_sweep_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enet_system, "_enet", _missing)
    config = SweepConfig(
        losses=(0.0,), members=(3,), systems=(ENET,), fanout_rates=(100.0,),
        fanout_systems=(ENET,), kernel_loss=False,
    )
    said: list[str] = []
    results = run_sweep(config, progress=said.append)
    (point,) = results.reference
    assert point.result is None and not results.fanout and not results.failures
    assert point.skipped is not None and "pip install pyenet" in point.skipped
    assert any("fan-out" in line and "pip install pyenet" in line for line in said)


def _missing() -> object:
    raise ModuleNotFoundError("No module named 'enet'", name="enet")
