"""The bare loop under the load benchmark's idle figure: it serves and answers what is sent."""

from __future__ import annotations

import pytest

from udpchat_bench.floor import FloorResult, bare_loop

pytestmark = pytest.mark.bench


@pytest.mark.timeout(30)
def test_the_bare_loop_reads_what_is_sent_and_costs_some_cpu() -> None:
    result = bare_loop(200.0, 1.6, peers=4, answer_every=2)
    # 200 a second over the measured 1.0 s middle of the run (a loaded machine may lag)
    assert 40 <= result.received <= 260
    assert 1 <= result.turns <= result.received
    assert result.cpu_s > 0 and 0 < result.seconds < 1.6
    assert result.us_per_datagram == pytest.approx(1e6 * result.cpu_s / result.received)
    assert 0 < result.cpu_pct <= 100


def test_the_figures_of_an_empty_window_are_not_divisions_by_zero() -> None:
    empty = FloorResult(received=0, turns=0, cpu_s=0.0, seconds=0.0)
    assert empty.us_per_datagram == empty.us_per_turn == empty.per_turn == empty.cpu_pct == 0.0


@pytest.mark.parametrize(
    ("rate", "seconds", "peers", "every"), [(0.0, 2.0, 1, 1), (10.0, 2.0, 0, 1), (10.0, 2.0, 1, 0)]
)
def test_bad_arguments_are_refused(rate: float, seconds: float, peers: int, every: int) -> None:
    with pytest.raises(ValueError, match="need rate"):
        bare_loop(rate, seconds, peers=peers, answer_every=every)


def test_a_run_too_short_to_have_a_middle_is_refused() -> None:
    with pytest.raises(ValueError, match=r"seconds must be over 0\.8"):
        bare_loop(10.0, 0.8)
