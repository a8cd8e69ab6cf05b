"""The RTO against RFC 6298's formulas, sample by sample."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpchat.link.rtt import K_GRANULARITY, RttEstimator

pytestmark = pytest.mark.unit


def reference(samples: list[float], min_rto: float, max_rto: float, ack_delay: float) -> float:
    """RFC 6298 section 2, written out literally."""
    srtt = rttvar = 0.0
    for i, r in enumerate(samples):
        if i == 0:
            srtt, rttvar = r, r / 2  # (2.2)
        else:
            rttvar = (1 - 1 / 4) * rttvar + 1 / 4 * abs(srtt - r)  # (2.3)
            srtt = (1 - 1 / 8) * srtt + 1 / 8 * r
    rto = srtt + max(K_GRANULARITY, 4 * rttvar) + ack_delay
    return min(max(rto, min_rto), max_rto)


@given(st.lists(st.floats(0.00001, 5.0), min_size=1, max_size=50))
def test_rto_matches_rfc_6298(samples: list[float]) -> None:
    est = RttEstimator(min_rto=0.005, max_rto=60.0, max_ack_delay=0.001)
    for r in samples:
        est.on_sample(r)
    assert est.rto == pytest.approx(reference(samples, 0.005, 60.0, 0.001))


def test_first_sample_and_worked_example() -> None:
    est = RttEstimator(min_rto=0.001, max_rto=60.0, max_ack_delay=0.0)
    est.on_sample(0.1)
    assert (est.srtt, est.rttvar) == (0.1, 0.05)
    assert est.rto == pytest.approx(0.1 + 4 * 0.05)
    est.on_sample(0.2)
    assert est.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert est.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_floor_and_cap() -> None:
    est = RttEstimator(min_rto=0.005, max_rto=1.0)
    est.on_sample(0.0001)
    assert est.rto == 0.005
    est.on_sample(30.0)
    assert est.rto == 1.0


def test_initial_rto_before_any_sample() -> None:
    est = RttEstimator(initial_rtt=0.1, max_ack_delay=0.0)
    assert est.rto == pytest.approx(0.3)
    with pytest.raises(ValueError):
        RttEstimator(min_rto=2.0, max_rto=1.0)
