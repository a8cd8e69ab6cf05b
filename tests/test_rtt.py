"""The RTO against RFC 6298's formulas, sample by sample, and where a link's estimate
starts: the handshake's, until the first sample replaces it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.client_support import relay_net
from tests.fakeclient import random_keys, swap
from udpchat import wire
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.link import Link
from udpchat.link.rtt import K_GRANULARITY, RttEstimator
from udpchat.sim import PathModel

pytestmark = pytest.mark.unit

KEYS = random_keys(7)


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


def test_a_handshake_estimate_gives_way_to_the_first_sample() -> None:
    """The RTT a handshake measured (protocol.md 4) may include the waits of a JOIN sent
    again unchanged: the link starts from it, and the first ACK's sample replaces it, as a
    first sample would, rather than being averaged with it."""
    sender = Link(b"S" * 8, rtt_hint=0.8, keys=KEYS)
    receiver = Link(b"R" * 8, keys=swap(KEYS))
    assert sender.rtt.srtt == pytest.approx(0.8)  # the estimate is used until then
    sender.send(b"hello")
    (data,) = sender.datagrams_to_send(0.0)
    envelope = wire.decode_datagram(data)
    assert isinstance(envelope, wire.Protected)
    opened = receiver.open(envelope)
    assert opened is not None
    receiver.receive(opened, 0.005)
    receiver.acknowledge_now()
    (ack,) = receiver.datagrams_to_send(0.005)
    envelope = wire.decode_datagram(ack)
    assert isinstance(envelope, wire.Protected)
    decoded = sender.open(envelope)
    assert decoded is not None
    sender.receive(decoded, 0.010)
    assert sender.rtt.srtt == pytest.approx(0.010)
    assert sender.rtt.rto < 0.05


def test_a_relay_whose_joiner_sent_join_again_keeps_a_short_rto() -> None:
    """Two JOINs lost: the cookie's age at the third is 750 ms more than the path's RTT.
    Once the member has acknowledged its WELCOME, the relay's RTO for it follows the path
    (10 ms), not the handshake (it was held at MAX_RTO, so every loss cost a second)."""
    net, relay, (alice,) = relay_net(("alice",), PathModel(delay=0.005))
    lost = [0]
    receive = relay.receive_datagram

    def lose_two_joins(data: bytes, src: Address, now: float) -> None:
        if wire.datagram_type(data) == wire.DatagramType.JOIN and lost[0] < 2:
            lost[0] += 1
            return
        receive(data, src, now)

    relay.receive_datagram = lose_two_joins  # type: ignore[method-assign]
    alice.connect(net.now)
    assert net.run_until(lambda: alice.state is SessionState.JOINED and alice.idle, 5)
    net.run(0.1)
    assert lost[0] == 2
    (member,) = relay.sessions.members.values()
    assert member.link.rtt.srtt == pytest.approx(0.010, abs=0.003)
    assert member.link.rtt.rto < 0.05


def test_a_timeout_before_any_sample_grows_the_estimate_until_the_first_sample() -> None:
    """protocol.md 5.5 (Karn): on an assumed RTT, before any sample, a packet's first
    timeout multiplies SRTT and RTTVAR by BACKOFF for the packets after it too, until the
    RTO reaches MAX_RTO; the first sample replaces them, and after it a timeout leaves the
    estimate alone; a handshake's estimate is never grown."""
    est = RttEstimator(initial_rtt=0.1, max_rto=10.0)
    rto = est.rto
    est.back_off(1.5)
    est.back_off(1.5)
    assert est.srtt == pytest.approx(0.225) and est.rttvar == pytest.approx(0.1125)
    assert est.rto > 2 * rto
    est.on_sample(0.4)
    assert (est.srtt, est.rttvar) == (pytest.approx(0.4), pytest.approx(0.2))
    est.back_off(1.5)
    assert est.srtt == pytest.approx(0.4)

    capped = RttEstimator(initial_rtt=0.1, max_rto=1.0)
    for _ in range(100):
        capped.back_off(1.5)
    assert capped.rto == 1.0 and capped.srtt < 0.5  # stopped once the RTO was capped

    measured = RttEstimator(initial_rtt=0.01, assumed=False)
    measured.back_off(1.5)
    assert measured.srtt == 0.01
