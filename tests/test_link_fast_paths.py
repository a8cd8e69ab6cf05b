"""The per-datagram fast paths of the link and the seal, held to the slow paths they skip:
``has_output`` to what a flush would send, the RTT sample to the largest packet an ACK
newly acknowledges, key phases moving on in order, a token of the wrong size refused."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakeclient import random_keys, swap
from udpchat import session_bytes, wire
from udpchat.link import Link
from udpchat.seal import KEPT_PHASES, SessionCipher

pytestmark = pytest.mark.unit

KEYS = random_keys(5)
ACTIONS = ["send", "ping", "ack-now", "tick", "flush-a", "flush-b"]


def opened(link: Link, data: bytes) -> wire.SessionDatagram:
    envelope = wire.decode_datagram(data)
    assert isinstance(envelope, wire.Protected)
    datagram = link.open(envelope)
    assert datagram is not None
    return datagram


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(ACTIONS), max_size=60),
    st.integers(0, 2**16),
)
def test_has_output_says_exactly_whether_a_flush_sends(actions: list[str], seed: int) -> None:
    rng = random.Random(seed)
    a, b = Link(b"A" * 8, keys=KEYS), Link(b"B" * 8, keys=swap(KEYS))
    now = 0.0

    def flush(sender: Link, receiver: Link) -> None:
        expected = sender.has_output(now)
        out = sender.datagrams_to_send(now)
        assert expected == bool(out)
        for data in out:
            if rng.random() < 0.8:  # some are lost, so that retransmissions come due
                receiver.receive(opened(receiver, data), now)

    for action in actions:
        if action == "send":
            a.send(b"x" * rng.randrange(1, 300))
        elif action == "ping":
            a.ping()
        elif action == "ack-now":
            b.acknowledge_now()
        elif action == "tick":
            now += rng.choice([0.0005, 0.003, 0.05, 0.4])
        elif action == "flush-a":
            flush(a, b)
        else:
            flush(b, a)
    flush(a, b)
    flush(b, a)


def test_the_rtt_sample_is_the_largest_packet_newly_acknowledged() -> None:
    sender, receiver = Link(b"S" * 8, keys=KEYS), Link(b"R" * 8, keys=swap(KEYS))
    sent = []
    for i in range(6):  # packets 0..5, sent 1 ms apart
        sender.send(b"m%d" % i)
        (data,) = sender.datagrams_to_send(i / 1000)
        sent.append(data)
    for i in (0, 1, 4, 5):  # 2 and 3 lost: the ACK says ack=2 and SACKs 4 and 5
        receiver.receive(opened(receiver, sent[i]), 0.006)
    receiver.acknowledge_now()
    (ack,) = receiver.datagrams_to_send(0.006)
    decoded = opened(sender, ack)
    assert isinstance(decoded, wire.Ack) and decoded.ack == 2 and decoded.ack_bits
    sender.receive(decoded, 0.010)
    assert sender.rtt.latest_rtt == pytest.approx(0.010 - 0.005)  # packet 5's, not 0's


def test_key_phases_move_on_as_packet_numbers_pass_them() -> None:
    interval = 4
    alice = SessionCipher(KEYS.send, KEYS.receive, False, interval)
    bob = SessionCipher(KEYS.receive, KEYS.send, False, interval)
    fields = session_bytes.ack_fields(0, 0)
    for pn in range(40 * interval):
        envelope = wire.decode_datagram(alice.seal(wire.DatagramType.ACK, b"T" * 8, pn, fields))
        assert isinstance(envelope, wire.Protected)
        assert bob.open(envelope) == fields
        # the phases behind are forgotten as the newest is confirmed
        kept = bob.receiving._keys
        assert (kept is None) == (pn < interval)  # no list while the first phase lasts
        assert len(kept or [bob.receiving.current]) <= KEPT_PHASES + 1
    assert bob.receiving._confirmed == 40 - 1


@pytest.mark.parametrize("token", [b"", b"abc", b"T" * 9])
def test_a_link_refuses_a_token_of_the_wrong_size(token: bytes) -> None:
    with pytest.raises(ValueError, match="token"):
        Link(token, keys=KEYS)
