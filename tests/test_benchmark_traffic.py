"""Delivery analysis on synthetic logs: the numbers every comparison rests on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpchat_bench.traffic import (
    MIN_PAYLOAD_SIZE,
    DeliveryLog,
    TrafficSpec,
    analyze,
    make_payload,
    padding,
    parse_payload,
    percentile,
    schedule_ns,
)

pytestmark = pytest.mark.bench

MS = 1_000_000


def log_of(member: int, arrivals: list[tuple[int, int, float]]) -> DeliveryLog:
    """Build a log from (sender, msg_id, latency_ms); message i is sent at i ms."""
    log = DeliveryLog(member=member)
    for sender, msg_id, latency_ms in arrivals:
        send_ns = msg_id * MS
        log.record(make_payload(sender, msg_id, send_ns, b"x" * 10), send_ns + int(latency_ms * MS))
    return log


def test_payload_round_trip_and_size() -> None:
    filler = padding(100, seed=7)
    payload = make_payload(3, 42, 123_456_789, filler)
    assert len(payload) == 100
    assert parse_payload(payload) == (3, 42, 123_456_789)
    assert padding(100, seed=7) == filler  # same traffic for every system
    assert payload.isascii() and payload.isalnum()  # chat text, one byte a character
    with pytest.raises(ValueError):
        parse_payload(payload[: MIN_PAYLOAD_SIZE - 1])
    with pytest.raises(ValueError):
        parse_payload(b"z" * MIN_PAYLOAD_SIZE)  # not the hex header make_payload writes
    with pytest.raises(ValueError):
        parse_payload("é".encode() * MIN_PAYLOAD_SIZE)


def test_spec_validation() -> None:
    assert TrafficSpec().messages == 400
    with pytest.raises(ValueError):
        TrafficSpec(size=MIN_PAYLOAD_SIZE - 1)
    with pytest.raises(ValueError):
        TrafficSpec(rate=0)


def test_schedule_has_no_drift() -> None:
    due = [d for _, d in schedule_ns(1_000, 301, 3.0)]
    assert due[0] == 1_000
    assert due[-1] == 1_000 + 100 * 1_000_000_000  # exactly 100 s later, no rounding drift


def test_perfect_delivery() -> None:
    logs = [log_of(r, [(0, i, 1.0 + i) for i in range(10)]) for r in (1, 2)]
    stats = analyze(logs, {0: 10})
    assert (stats.expected, stats.delivered, stats.lost) == (20, 20, 0)
    assert (stats.duplicates, stats.out_of_order, stats.unexpected) == (0, 0, 0)
    assert stats.latency_ms is not None
    assert stats.latency_ms.max == pytest.approx(10.0)
    assert stats.delivery_ratio == 1.0


def test_loss_duplicates_and_reorder() -> None:
    # ids 0..5 sent; 2 lost, 4 duplicated, 3 overtaken by 5 and 4.
    log = log_of(1, [(0, 0, 1), (0, 1, 1), (0, 4, 1), (0, 4, 2), (0, 5, 1), (0, 3, 9)])
    stats = analyze([log], {0: 6})
    assert stats.expected == 6
    assert stats.delivered == 5
    assert stats.lost == 1
    assert stats.duplicates == 1
    assert stats.out_of_order == 1
    assert stats.latency_ms is not None and stats.latency_ms.count == 5  # first arrivals only


def test_unexpected_and_malformed() -> None:
    log = log_of(1, [(1, 0, 1), (0, 99, 1), (0, 0, 1)])  # own echo, unknown id, good
    log.record(b"short", 0)
    stats = analyze([log], {0: 1})
    assert (stats.delivered, stats.unexpected, stats.malformed) == (1, 2, 1)


def test_fanout_expectations_exclude_own_messages() -> None:
    # Members 0 and 1 both send 2 messages; member 2 only receives.
    logs = [
        log_of(0, [(1, 0, 1), (1, 1, 1)]),
        log_of(1, [(0, 0, 1)]),
        log_of(2, [(0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 1)]),
    ]
    stats = analyze(logs, {0: 2, 1: 2})
    assert stats.expected == 2 + 2 + 4
    assert stats.delivered == 7
    assert stats.lost == 1


def test_nothing_delivered() -> None:
    stats = analyze([DeliveryLog(member=1)], {0: 3})
    assert (stats.delivered, stats.lost, stats.latency_ms) == (0, 3, None)
    assert stats.delivery_ratio == 0.0


def test_percentiles_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)

    stats = analyze([log_of(1, [(0, i, float(i + 1)) for i in range(100)])], {0: 100})
    assert stats.latency_ms is not None
    assert (stats.latency_ms.p50, stats.latency_ms.p90, stats.latency_ms.p99) == (50, 90, 99)
    assert stats.latency_ms.max == 100


def test_log_round_trips_through_json_dict() -> None:
    log = log_of(2, [(0, 1, 1.5), (0, 0, 2.5)])
    assert DeliveryLog.from_dict(log.to_dict()) == log


@given(
    st.lists(st.tuples(st.integers(0, 19), st.floats(0, 1000)), max_size=60),
)
def test_accounting_is_consistent(arrivals: list[tuple[int, float]]) -> None:
    log = log_of(1, [(0, msg_id, lat) for msg_id, lat in arrivals])
    stats = analyze([log], {0: 20})
    assert stats.delivered + stats.lost == stats.expected == 20
    assert stats.delivered + stats.duplicates == len(arrivals)
    assert stats.delivered == len({m for m, _ in arrivals})
    assert stats.out_of_order <= stats.delivered
    if stats.latency_ms is not None:
        lat = stats.latency_ms
        assert lat.p50 <= lat.p90 <= lat.p99 <= lat.max
