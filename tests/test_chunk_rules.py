"""The chunk rules of DATA (protocol.md 3, 5.1): never empty, at most MAX_CHUNKS a datagram,
and our own sender keeps to both."""

from __future__ import annotations

import random

import pytest

from tests.fakeclient import FakeClient, random_keys, swap
from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.link import Link
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.sim import SimNetwork

pytestmark = pytest.mark.unit

TOKEN = b"R" * 8
RELAY = ("127.0.0.1", 9000)

KEYS = random_keys(7)


def feed(link: Link, datagrams: list[bytes]) -> list[bytes]:
    delivered: list[bytes] = []
    for data in datagrams:
        envelope = wire.decode_datagram(data)
        assert isinstance(envelope, wire.Protected)
        delivered.extend(link.receive_sealed(envelope, 0.0) or [])
    return delivered


def opened(chunks: list[bytes]) -> wire.SessionDatagram:
    """Decode a DATA's sealed fields as a receiver does once they authenticated."""
    envelope = wire.Protected(wire.DatagramType.DATA, TOKEN, 0, b"")
    return wire.decode_session(envelope, session_bytes.data_fields(0, 0, 0, 0, chunks))


@pytest.mark.parametrize(
    "chunks, reason",
    [
        ([b""], "non-empty"),
        ([b"ok", b""], "non-empty"),
        ([b"x"] * (wire.MAX_CHUNKS + 1), "more than"),
    ],
)
def test_data_with_empty_or_too_many_chunks_is_malformed(chunks: list[bytes], reason: str) -> None:
    with pytest.raises(wire.DecodeError, match=reason):
        opened(chunks)


def test_data_with_max_chunks_is_accepted() -> None:
    datagram = opened([b"x"] * wire.MAX_CHUNKS)
    assert isinstance(datagram, wire.Data) and len(datagram.chunks) == wire.MAX_CHUNKS


def test_relay_drops_empty_and_too_many_chunks_as_malformed() -> None:
    net = SimNetwork(seed=1)
    relay = RelayCore(RelayConfig(), 0.0, random.Random(1).randbytes)
    net.attach(RELAY, relay)
    alice = FakeClient("alice", RELAY, seed=1)
    net.attach(("127.0.0.1", 40001), alice)
    assert net.run_until(lambda: alice.joined, 5)
    assert alice.link is not None
    token = alice.link.token
    member = relay.members[token]
    say = m.encode_message(m.Say("hi"))
    for pn, chunks in ((1000, [say, b""]), (1001, [say] * (wire.MAX_CHUNKS + 1))):
        invalid = member.link.stats.invalid
        fields = session_bytes.data_fields(0, 0, 0, 0, chunks)
        datagram = alice.link._cipher.seal(wire.DatagramType.DATA, token, pn, fields)
        net.inject(("127.0.0.1", 40001), RELAY, datagram)
        net.run(0.01)
        assert member.link.stats.invalid == invalid + 1  # it opened, but does not decode
    assert member.link.stats.messages_delivered == 0
    assert relay.room_seq == 1  # alice's JOINED only: no SAY got through


def test_empty_message_is_refused_by_send() -> None:
    with pytest.raises(ValueError, match="empty"):
        Link(TOKEN, keys=swap(KEYS)).send(b"")


def test_sender_bundles_at_most_max_chunks_per_packet() -> None:
    sender = Link(b"S" * 8, keys=KEYS)
    receiver = Link(TOKEN, keys=swap(KEYS))
    messages = [b"%d" % i for i in range(3 * wire.MAX_CHUNKS + 5)]
    for message in messages:
        sender.send(message)
    datagrams = sender.datagrams_to_send(0.0)
    decoded = [receiver.open(wire.decode_datagram(d)) for d in datagrams]  # type: ignore[arg-type]
    assert all(isinstance(d, wire.Data) and len(d.chunks) <= wire.MAX_CHUNKS for d in decoded)
    receiver = Link(TOKEN, keys=swap(KEYS))
    assert len(datagrams) == 4
    assert feed(receiver, datagrams) == messages
