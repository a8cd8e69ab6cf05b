"""The relay's handshake gate: HELLO, CHALLENGE and JOIN, cookies, rejections and resets
(protocol.md 4). Simulated network, virtual clock."""

from __future__ import annotations

import msgpack
import pytest

from tests.fakeclient import join_datagram, stray_session
from tests.relaysim import RELAY, STATIC, Sink, client_addr, join, setup
from udpchat import handshake as hs
from udpchat import wire
from udpchat.relay.config import RelayConfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "nick, code",
    [
        ("ALICE", wire.RejectCode.NICK_TAKEN),
        ("\uff21\uff4c\uff49\uff43\uff45", wire.RejectCode.NICK_TAKEN),  # full-width
        ("has space", wire.RejectCode.NICK_INVALID),
        ("x" * 33, wire.RejectCode.NICK_INVALID),
        ("evil\u202e", wire.RejectCode.NICK_INVALID),
    ],
)
def test_join_rejections(nick: str, code: wire.RejectCode) -> None:
    net, _ = setup()
    join(net, "alice", 1)
    other = join(net, nick, 2)
    assert other.reject is not None and other.reject.code == code
    assert other.reject.nonce == other.nonce
    assert other.link is None


def test_relay_full() -> None:
    net, _ = setup(RelayConfig(max_members=2))
    join(net, "a", 1)
    join(net, "b", 2)
    c = join(net, "c", 3)
    assert c.reject is not None and c.reject.code == wire.RejectCode.RELAY_FULL


def test_other_protocol_version_is_told() -> None:
    net, _relay = setup()
    seen: list[bytes] = []
    net.attach(client_addr(1), Sink(seen))
    hello_v9 = bytearray(wire.encode_hello(b"n" * 8))
    hello_v9[1] = 9
    net.inject(client_addr(1), RELAY, bytes(hello_v9))
    net.run(0.1)
    (reply,) = seen
    # In the requester's version, so that it can read it (protocol.md 3.1); it could not
    # read the nonce: the REJECT is bound to the whole request instead.
    version, kind, nonce, code, reason = msgpack.unpackb(reply)
    assert (version, kind, code) == (9, wire.DatagramType.REJECT, wire.RejectCode.VERSION)
    assert nonce == wire.request_hash(bytes(hello_v9))
    assert reason == "this relay speaks udpchat protocol version 3"


def test_unknown_token_gets_reset() -> None:
    net, relay = setup()
    seen: list[bytes] = []
    net.attach(client_addr(1), Sink(seen))
    net.inject(client_addr(1), RELAY, stray_session(b"T" * 8))
    net.run(0.1)
    proof = hs.reset_token(hs.reset_secret(STATIC), b"T" * 8)
    assert [wire.decode_datagram(d) for d in seen] == [wire.Reset(b"T" * 8, proof)]
    assert relay.stats.unknown_session == 1


def test_spoofed_join_cannot_complete() -> None:
    """A cookie sent to one address is worthless from another."""
    net, relay = setup()
    victim_cookie: list[bytes] = []
    net.attach(client_addr(1), Sink(victim_cookie))
    net.inject(client_addr(1), RELAY, wire.encode_hello(b"n" * 8))
    net.run(0.1)
    challenge = wire.decode_datagram(victim_cookie[0])
    assert isinstance(challenge, wire.Challenge)
    net.inject(client_addr(2), RELAY, join_datagram(b"n" * 8, challenge, "mallory"))
    net.run(0.1)
    assert relay.member_nicks() == []
    assert relay.stats.bad_cookies == 1
