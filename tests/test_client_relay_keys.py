"""The client session against the real relay core with room keys and relay identities: wrong
and missing keys told at once, one psk per identity, sealed sizes."""

from __future__ import annotations

import pytest

from tests.client_support import (
    RELAY,
    RELAY_STATIC,
    TIME,
    client_addr,
    drain,
    handshake_traffic,
    join_all,
    keyed_member,
    keyed_net,
    of,
    seeded,
)
from tests.fakeclient import quick_room_key
from udpchat import events as ev
from udpchat import wire
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.seal import PskDeriver, room_key
from udpchat.sim import PathModel, SimNetwork

pytestmark = pytest.mark.unit


def test_e2e_room_key() -> None:
    net, relay = keyed_net(quick_room_key(b"open sesame"))
    alice = keyed_member(net, 0, "alice", quick_room_key(b"open sesame"))
    sizes: list[int] = []
    net.taps.append(lambda src, dst, data: sizes.append(len(data)))
    join_all(net, [alice])
    alice.say("sealed", net.now)
    alice.say("é" * 8000, net.now)  # 16,000 bytes: many full-size sealed datagrams
    assert net.run_until(lambda: alice.idle, 5)
    assert max(sizes) == wire.MAX_DATAGRAM_SIZE  # HELLO and JOIN; full DATA fit too
    assert relay.member_nicks() == ["alice"]
    assert relay.stats.bad_key == 0


def test_e2e_wrong_key_is_told_promptly() -> None:
    """One round trip to learn the relay's key, one for the JOIN whose handshake the relay
    cannot authenticate: the answer is final, since the cookie showed the same relay."""
    net, relay = keyed_net(quick_room_key(b"open sesame"))
    mallory = keyed_member(net, 1, "mallory", quick_room_key(b"open says me"))
    mallory.connect(net.now)
    assert net.run_until(lambda: mallory.state is SessionState.CLOSED, 10)
    assert net.now < 0.1
    assert drain(mallory) == [
        ev.JoinRejected(wire.RejectCode.BAD_KEY, "wrong room key"),
        ev.Closed("wrong room key"),
    ]
    assert relay.member_nicks() == [] and relay.stats.bad_key == 1


def test_e2e_no_key_against_a_relay_with_one_is_told_promptly() -> None:
    net, relay = keyed_net(quick_room_key(b"open sesame"))
    eve = keyed_member(net, 2, "eve", None)
    sent = handshake_traffic(net, client_addr(2))
    eve.connect(net.now)
    assert net.run_until(lambda: eve.state is SessionState.CLOSED, 10)
    assert net.now < 0.05  # one round trip
    assert drain(eve) == [ev.Closed("this room needs a key: give it with --key or UDPCHAT_KEY")]
    assert sent == [(False, wire.DatagramType.HELLO)]  # no JOIN: nothing to refuse
    assert relay.stats.bad_key == 0


def test_e2e_a_key_against_a_relay_without_one_is_told_promptly() -> None:
    derived: list[bytes] = []
    real = quick_room_key(b"open sesame")

    def room_key(relay_key: bytes) -> bytes:
        derived.append(relay_key)
        return real(relay_key)

    net, relay = keyed_net(None)
    alice = keyed_member(net, 0, "alice", room_key)
    sent = handshake_traffic(net, client_addr(0))
    alice.connect(net.now)
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 10)
    assert net.now < 0.05
    assert drain(alice) == [ev.Closed("this relay has no room key; join without --key")]
    assert sent == [(False, wire.DatagramType.HELLO)]  # it never joined in the clear
    assert derived == [] and relay.member_nicks() == []


def test_e2e_each_relay_identity_has_its_own_psk() -> None:
    """With the real scrypt: two relays with one passphrase have two static keys, so they
    derive two psks; a member derives the psk for each relay key once, and takes it from its
    cache when the first relay is back."""
    passphrase = "correct horse battery staple"
    first = RelayCore(RelayConfig(), 0.0, seeded(1), TIME, room_key(passphrase))
    second = RelayCore(RelayConfig(), 0.0, seeded(3), TIME, room_key(passphrase))
    assert first.relay_key != second.relay_key
    derived: list[bytes] = []
    real = room_key(passphrase)

    def counting(relay_key: bytes) -> bytes:
        derived.append(relay_key)
        return real(relay_key)

    net = SimNetwork(seed=4, default=PathModel(delay=0.005))
    net.attach(RELAY, first)
    alice = keyed_member(net, 0, "alice", counting)
    join_all(net, [alice])
    assert derived == [first.relay_key]
    for relay, reconnects in ((second, 1), (first, 2)):
        net.detach(RELAY)
        net.attach(RELAY, relay)
        alice.say(f"to the relay with key {relay.relay_key.hex()}", net.now)
        assert net.run_until(lambda n=reconnects: alice.stats.reconnects == n, 20)
        assert net.run_until(lambda: alice.state is SessionState.JOINED, 5)
    # The second relay could not open what alice sealed for the first: other session keys.
    assert second.stats.unknown_session > 0
    assert derived == [first.relay_key, second.relay_key]


def test_e2e_a_relay_restart_between_challenge_and_join_is_not_a_wrong_key() -> None:
    """The JOIN was encrypted to a relay identity that is gone; its successor (a new key)
    answers it with a fresh CHALLENGE carrying its own key, which the client checks and
    takes (once per HELLO): it joins the new relay."""
    net, _first = keyed_net(quick_room_key(b"open sesame"))
    second = RelayCore(RelayConfig(), 0.0, seeded(8), TIME, quick_room_key(b"open sesame"))
    alice = keyed_member(net, 0, "alice", quick_room_key(b"open sesame"))

    def restart_after_challenge(src: Address, dst: Address, data: bytes) -> None:
        if (
            src == RELAY
            and wire.datagram_type(data) == wire.DatagramType.CHALLENGE
            and second.stats.handshakes == 0
        ):
            net.detach(RELAY)
            net.attach(RELAY, second)

    net.taps.append(restart_after_challenge)
    join_all(net, [alice])
    assert second.member_nicks() == ["alice"] and second.stats.bad_key == 0
    assert of(alice, ev.JoinRejected) == []


@pytest.mark.parametrize(
    ("new_key", "reason"),
    [
        (quick_room_key(b"open says me"), "wrong room key"),
        (None, "this relay has no room key; join without --key"),
    ],
    ids=["another-key", "no-key"],
)
def test_e2e_a_relay_restarted_with_another_key_ends_the_rejoin(
    new_key: PskDeriver | None, reason: str
) -> None:
    net, _first = keyed_net(quick_room_key(b"open sesame"))
    alice = keyed_member(net, 0, "alice", quick_room_key(b"open sesame"))
    join_all(net, [alice])
    net.detach(RELAY)
    restarted = RelayCore(
        RelayConfig(), net.now, seeded(8), TIME, room_key=new_key, static_key=RELAY_STATIC
    )
    net.attach(RELAY, restarted)
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 20)
    (closed,) = of(alice, ev.Closed)
    assert closed == ev.Closed(reason)


def test_e2e_sealed_chat_lines_show_only_their_bucket() -> None:
    """An observer of a room with a key sees the same datagrams, size for size, whether a
    member says "hi" or a 100-character line: from the sender, in the relay's answer and in
    its fan-out (protocol.md 8). Unpadded, they were 61 and 160 bytes."""
    net, _relay = keyed_net(quick_room_key(b"open sesame"))
    alice = keyed_member(net, 0, "alice", quick_room_key(b"open sesame"))
    bob = keyed_member(net, 1, "bob", quick_room_key(b"open sesame"))
    join_all(net, [alice, bob])
    assert net.run_until(lambda: alice.idle and bob.idle, 5)

    def observed(text: str) -> list[tuple[Address, Address, int]]:
        """(source, destination, padded plaintext size) of every DATA on the wire."""
        seen: list[tuple[Address, Address, int]] = []

        def tap(src: Address, dst: Address, data: bytes) -> None:
            datagram = wire.decode_datagram(data)
            if isinstance(datagram, wire.Protected) and datagram.kind == wire.DatagramType.DATA:
                seen.append((src, dst, len(datagram.sealed) - 16))

        net.taps.append(tap)
        heard = len(of(bob, ev.MessageReceived))
        alice.say(text, net.now)
        assert net.run_until(lambda: len(of(bob, ev.MessageReceived)) > heard, 2)
        assert net.run_until(lambda: alice.idle and bob.idle, 2)
        net.run(0.05)
        net.taps.pop()
        return seen

    short = observed("hi")
    long = observed("x" * 100)
    assert (
        short
        == long
        == [
            (client_addr(0), RELAY, 256),  # the SAY
            (RELAY, client_addr(1), 256),  # the fan-out (first: the POSTED can wait)
            (RELAY, client_addr(0), 256),  # POSTED
        ]
    )
