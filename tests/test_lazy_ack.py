"""DATA flagged LAZY (protocol.md 5.3, 5.5): its ACK may wait for what the receiver sends
next, its sender's timer allows for that, and nothing else about reliability changes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakeclient import random_keys, swap
from tests.linknode import LinkNode
from udpchat import wire
from udpchat.link import ACK_DELAY, LAZY_ACK_DELAY, Link, LinkConfig
from udpchat.sim import PathModel, SimNetwork

pytestmark = pytest.mark.unit

KEYS = random_keys(2)
A = ("10.0.0.1", 1)
B = ("10.0.0.2", 2)


def opened(link: Link, data: bytes) -> wire.SessionDatagram:
    envelope = wire.decode_datagram(data)
    assert isinstance(envelope, wire.Protected)
    datagram = link.open(envelope)
    assert datagram is not None
    return datagram


def pair() -> tuple[Link, Link]:
    return Link(b"S" * 8, keys=KEYS), Link(b"R" * 8, keys=swap(KEYS))


def test_a_packet_of_lazy_messages_is_flagged_and_one_with_any_other_is_not() -> None:
    sender, receiver = pair()
    sender.send(b"posted", lazy=True)
    sender.send(b"posted too", lazy=True)
    (lazy,) = sender.datagrams_to_send(0.0)
    data = opened(receiver, lazy)
    assert isinstance(data, wire.Data) and data.lazy and not data.more
    sender.send(b"posted", lazy=True)
    sender.send(b"a copy")
    (mixed,) = sender.datagrams_to_send(0.0)
    data = opened(receiver, mixed)
    assert isinstance(data, wire.Data) and not data.lazy


def test_the_ack_of_a_lazy_packet_waits_and_rides_on_the_next_data() -> None:
    sender, receiver = pair()
    sender.send(b"posted", lazy=True)
    (datagram,) = sender.datagrams_to_send(0.0)
    assert receiver.receive(opened(receiver, datagram), 0.0) == [b"posted"]
    assert receiver.next_timer() == pytest.approx(LAZY_ACK_DELAY)
    assert receiver.datagrams_to_send(LAZY_ACK_DELAY / 2) == []  # not due yet
    receiver.send(b"the next request")
    (request,) = receiver.datagrams_to_send(LAZY_ACK_DELAY / 2)
    data = opened(sender, request)
    assert isinstance(data, wire.Data) and data.ack == 1  # the ACK rode on it
    sender.receive(data, LAZY_ACK_DELAY / 2)
    assert sender.idle
    assert receiver.next_timer() is not None  # the request's own retransmission timer only
    assert receiver.datagrams_to_send(LAZY_ACK_DELAY) == []  # no ACK left to send alone


def test_a_lazy_ack_goes_alone_at_its_deadline_and_an_urgent_packet_brings_it_forward() -> None:
    sender, receiver = pair()
    sender.send(b"posted", lazy=True)
    (datagram,) = sender.datagrams_to_send(0.0)
    receiver.receive(opened(receiver, datagram), 0.0)
    (ack,) = receiver.datagrams_to_send(LAZY_ACK_DELAY)
    acked = opened(sender, ack)
    assert isinstance(acked, wire.Ack)
    sender.receive(acked, LAZY_ACK_DELAY)
    sender.send(b"posted", lazy=True)
    (first,) = sender.datagrams_to_send(0.1)
    sender.send(b"a copy")
    (second,) = sender.datagrams_to_send(0.1)
    receiver.receive(opened(receiver, first), 0.1)
    assert receiver.next_timer() == pytest.approx(0.1 + LAZY_ACK_DELAY)
    receiver.receive(opened(receiver, second), 0.1)
    (ack,) = receiver.datagrams_to_send(0.1)  # ACK_EVERY: at once
    acked = opened(sender, ack)
    assert isinstance(acked, wire.Ack) and acked.ack == 3


def test_the_sender_waits_longer_for_a_lazy_packet_before_sending_it_again() -> None:
    lazy_sender, _ = pair()
    urgent_sender, _ = pair()
    lazy_sender.send(b"posted", lazy=True)
    urgent_sender.send(b"posted")
    lazy_sender.datagrams_to_send(0.0)
    urgent_sender.datagrams_to_send(0.0)
    lazy_timer, urgent_timer = lazy_sender.next_timer(), urgent_sender.next_timer()
    assert lazy_timer is not None and urgent_timer is not None
    assert lazy_timer - urgent_timer == pytest.approx(LAZY_ACK_DELAY - ACK_DELAY)
    assert urgent_sender.datagrams_to_send(urgent_timer)  # sent again
    assert lazy_sender.datagrams_to_send(urgent_timer) == []  # still waiting for the ACK
    (again,) = lazy_sender.datagrams_to_send(lazy_timer)
    assert lazy_sender.stats.retransmissions == 1
    data = opened(Link(b"R" * 8, keys=swap(KEYS)), again)
    assert isinstance(data, wire.Data) and data.lazy  # a retransmission repeats the flags


messages = st.lists(st.tuples(st.binary(min_size=1, max_size=2000), st.booleans()), max_size=30)
paths = st.builds(
    PathModel,
    loss=st.floats(0, 0.4),
    duplicate=st.floats(0, 0.2),
    reorder=st.floats(0, 0.2),
    delay=st.floats(0.0001, 0.02),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), path=paths, a_to_b=messages, b_to_a=messages)
@pytest.mark.timeout(300)
def test_lazy_or_not_every_message_arrives_once_in_order(
    seed: int, path: PathModel, a_to_b: list[tuple[bytes, bool]], b_to_a: list[tuple[bytes, bool]]
) -> None:
    net = SimNetwork(seed=seed, default=path)
    config = LinkConfig(max_retransmissions=60)
    a = LinkNode(Link(b"A" * 8, config, keys=KEYS), B)
    b = LinkNode(Link(b"B" * 8, config, keys=swap(KEYS)), A)
    net.attach(A, a)
    net.attach(B, b)
    for message, lazy in a_to_b:
        a.link.send(message, lazy)
    for message, lazy in b_to_a:
        b.link.send(message, lazy)
    for _ in range(3000):
        if not net.step() or (a.link.idle and b.link.idle):
            break
        assert b.delivered == [m for m, _ in a_to_b][: len(b.delivered)]
    net.set_path(A, B, PathModel())
    net.set_path(B, A, PathModel())
    assert net.run_until(lambda: a.link.idle and b.link.idle, 120)
    assert b.delivered == [m for m, _ in a_to_b]
    assert a.delivered == [m for m, _ in b_to_a]


def test_a_lazy_packet_gives_no_rtt_sample() -> None:
    sender, receiver = pair()
    sender.send(b"posted", lazy=True)
    (datagram,) = sender.datagrams_to_send(0.0)
    receiver.receive(opened(receiver, datagram), 0.0)
    (ack,) = receiver.datagrams_to_send(LAZY_ACK_DELAY)
    samples = sender.rtt.samples
    sender.receive(opened(sender, ack), LAZY_ACK_DELAY)
    assert sender.idle and sender.rtt.samples == samples  # held back: not a round trip
