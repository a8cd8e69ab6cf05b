"""The handshake's ephemeral keys are made ahead, off the join's path: a client's while its
HELLO is on the way, the relay's once the last ACCEPT has gone; each serves one handshake."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from udpchat import wire
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.link import ASAP
from udpchat.noise import DHLEN, Ephemeral, Initiator, Responder, public_key
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore

pytestmark = pytest.mark.unit

RELAY = ("127.0.0.1", 9000)


def _rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def _carry(
    out: list[tuple[bytes, tuple[str, int]]], to: ClientSession | RelayCore, src: tuple[str, int]
) -> list[wire.Datagram]:
    for data, _ in out:
        to.receive_datagram(data, src, 0.0)
    return [wire.decode_datagram(data) for data, _ in out]


def _join(relay: RelayCore, nick: str, port: int, seed: int) -> tuple[bytes, bytes]:
    """Join ``nick`` by hand, running each side's due timers as a driver would between
    datagrams; the ephemeral public keys of its JOIN and of the relay's ACCEPT."""
    addr = ("127.0.0.1", port)
    client = ClientSession(ClientConfig(nick=nick, server=RELAY), _rng(seed), 0.0)
    client.connect(0.0)
    (hello,) = _carry(client.datagrams_to_send(0.0), relay, addr)
    assert isinstance(hello, wire.Hello)
    # the HELLO is on its way: the client's next timer is now, and makes the key
    assert client.next_timer() == ASAP
    client.handle_timer(0.0)
    assert client.next_timer() != ASAP
    _carry(relay.datagrams_to_send(0.0), client, RELAY)
    (join,) = _carry(client.datagrams_to_send(0.0), relay, addr)
    assert isinstance(join, wire.Join)
    answer = _carry(relay.datagrams_to_send(0.0), client, RELAY)
    accept = answer[0]
    assert isinstance(accept, wire.Accept)
    assert client.state is SessionState.JOINED
    return join.handshake[:DHLEN], accept.handshake[:DHLEN]


def test_a_joins_keys_are_made_between_the_datagrams_and_used_once() -> None:
    relay = RelayCore(RelayConfig(heartbeat=1.0), 0.0, _rng(1))
    spare = relay.gate.spare
    assert spare is not None  # made with the relay
    assert relay.next_timer() != ASAP
    joins, accepts = [], []
    for i in range(3):
        join_key, accept_key = _join(relay, f"m{i}", 10_000 + i, 100 + i)
        assert accept_key == spare.public  # the ACCEPT used the key made beforehand
        assert relay.gate.spare is None  # spent: the next one is made after
        assert relay.next_timer() == ASAP
        relay.handle_timer(0.0)
        spare = relay.gate.spare
        assert spare is not None and spare.public != accept_key
        joins.append(join_key)
        accepts.append(accept_key)
    assert len(set(joins)) == len(set(accepts)) == 3


def test_a_relay_without_a_key_ready_makes_one_at_the_join() -> None:
    relay = RelayCore(RelayConfig(heartbeat=1.0), 0.0, _rng(2))
    relay.gate.spare = None  # as after a join whose timer has not run yet
    _, first = _join(relay, "a", 10_000, 7)
    _, second = _join(relay, "b", 10_001, 8)  # still none made in between
    assert first != second


def test_a_made_ephemeral_key_gives_the_same_handshake_as_its_bytes() -> None:
    static, ephemeral, theirs = bytes(range(32)), bytes(range(1, 33)), bytes(range(2, 34))
    by_bytes = Initiator(public_key(static), b"p", None, ephemeral, b"hi")
    made = Initiator(public_key(static), b"p", None, Ephemeral(ephemeral), b"hi")
    assert made.message == by_bytes.message
    responder = Responder(static, b"p", None, made.message)
    again = Responder(static, b"p", None, made.message)
    assert responder.respond(theirs, b"ok") == again.respond(Ephemeral(theirs), b"ok")


def test_an_ephemeral_key_has_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Ephemeral(bytes(31))
