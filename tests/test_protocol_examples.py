"""The hex examples and test vectors in protocol.md come out of the code exactly, so the
contract cannot drift from it, and another implementation can check itself against them."""

from __future__ import annotations

import random
from pathlib import Path

import msgpack
import pytest

from udpchat import handshake as hs
from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.noise import public_key
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.seal import SessionCipher, derive_room_psk

pytestmark = pytest.mark.unit

SPEC = Path(__file__).resolve().parent.parent / "protocol.md"

STATIC = bytes(range(0x20, 0x40))
CLIENT_EPHEMERAL = bytes(range(0x40, 0x60))
RELAY_EPHEMERAL = bytes(range(0x60, 0x80))
NONCE = bytes.fromhex("0102030405060708")
COOKIE = bytes.fromhex("0000012c000102030405060708090a0b0c0d0e0f")
TOKEN = bytes.fromhex("a1b2c3d4e5f60718")
EPOCH = bytes.fromhex("e0e1e2e3e4e5e6e7")
PASSPHRASE = "correct horse battery staple"
DATAGRAM_EXAMPLES = 12  # section 10 shows one datagram of each type, then messages
SAY = m.encode_message(m.Say("hi", bytes.fromhex("1122334455667788")))


def examples() -> list[bytes]:
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("## 10. Examples") :]
    out = []
    for line in section.splitlines():
        if not line.startswith("    "):
            continue
        body = line.strip()
        truncated = body.endswith("...")
        data = bytes.fromhex(body.removesuffix("...").strip())
        if truncated:  # HELLO and JOIN: the rest of the padding is zeros
            data += bytes(wire.MIN_INITIAL_SIZE - len(data))
        out.append(data)
    return out


def vector(label: str) -> bytes:
    """The bytes of one labelled value of protocol.md 8.3 (it may span several lines)."""
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("### 8.3 Test vectors") : text.index("### 8.4")]
    lines = [line.strip() for line in section.splitlines() if line.startswith("    ")]
    found = "".join(x.removeprefix(f"{label}:") for x in lines if x.startswith(f"{label}:"))
    assert found, label
    return bytes.fromhex(found)


def handshake(psk: bytes | None) -> tuple[bytes, bytes, hs.SessionKeys, hs.SessionKeys]:
    """JOIN, ACCEPT and both ends' keys from the inputs of protocol.md 8.3."""
    relay_key = public_key(STATIC)
    join, initiator = hs.start_join(NONCE, COOKIE, relay_key, psk, CLIENT_EPHEMERAL, "alice", None)
    decoded = wire.decode_datagram(join)
    assert isinstance(decoded, wire.Join)
    responder, request = hs.read_join(STATIC, decoded, psk)
    assert request == wire.JoinPayload("alice", None)
    reset = hs.reset_token(hs.reset_secret(STATIC), TOKEN)
    payload = wire.AcceptPayload(EPOCH, 1000, 10000, reset)
    accept, relay_keys = hs.accept(
        responder, NONCE, TOKEN, payload, RELAY_EPHEMERAL, psk is not None
    )
    accepted = wire.decode_datagram(accept)
    assert isinstance(accepted, wire.Accept)
    got, client_keys = hs.finish_join(initiator, accepted, psk is not None)
    assert got == payload
    return join, accept, client_keys, relay_keys


def test_the_test_vectors_without_and_with_a_room_key() -> None:
    """protocol.md 8.3: fixed keys, nonce and cookie give exactly the handshake messages,
    the split keys and the sealed DATA shown, with the real X25519, BLAKE2s, scrypt and
    ChaCha20-Poly1305."""
    relay_key = public_key(STATIC)
    assert vector("relay_key") == relay_key
    assert vector("prologue") == hs.prologue(NONCE, COOKIE) == b"udpchat/3" + NONCE + COOKIE
    assert vector("reset_token") == hs.reset_token(hs.reset_secret(STATIC), TOKEN)
    psk = derive_room_psk(PASSPHRASE, relay_key)
    assert vector("psk psk") == psk
    for label, key in (("nk", None), ("psk", psk)):
        join, accept, client, relay = handshake(key)
        decoded_join, decoded_accept = wire.decode_datagram(join), wire.decode_datagram(accept)
        assert isinstance(decoded_join, wire.Join) and isinstance(decoded_accept, wire.Accept)
        assert decoded_join.handshake == vector(f"{label} message1")
        assert decoded_accept.handshake == vector(f"{label} message2")
        assert (client.send, client.receive) == (
            vector(f"{label} k_client"),
            vector(f"{label} k_relay"),
        )
        assert (relay.send, relay.receive) == (client.receive, client.send)
        cipher = SessionCipher(client.send, client.receive, key is not None)
        fields = session_bytes.data_fields(3, 5, 7, 0, [SAY])
        data = cipher.seal(wire.DatagramType.DATA, TOKEN, 12, fields)
        assert data == vector(f"{label} data")
        envelope = wire.decode_datagram(data)
        assert isinstance(envelope, wire.Protected)
        opened = SessionCipher(relay.send, relay.receive, key is not None).open(envelope)
        assert opened == fields
    assert len(vector("psk data")) == 1 + 8 + 1 + 256 + 16  # type, token, pn, bucket, tag


def test_every_datagram_and_message_example_decodes_as_described() -> None:
    found = examples()
    datagrams = [wire.decode_datagram(d) for d in found[:DATAGRAM_EXAMPLES]]
    kinds = [d.kind if isinstance(d, wire.Protected) else type(d) for d in datagrams]
    T = wire.DatagramType
    assert kinds == [
        wire.Hello,
        wire.Challenge,
        wire.Join,
        wire.Accept,
        wire.Reject,
        T.DATA,
        T.ACK,
        T.PING,
        wire.Reset,
        T.PATH_CHALLENGE,
        T.PATH_RESPONSE,
        wire.Busy,
    ]
    for data, datagram in zip(found[:DATAGRAM_EXAMPLES], datagrams, strict=True):
        assert wire.encode(datagram) == data  # the examples are canonical encodings
    join, accept, client, relay = handshake(None)
    assert found[2] == join and found[3] == accept
    challenge = datagrams[1]
    assert isinstance(challenge, wire.Challenge)
    assert challenge.relay_key == public_key(STATIC) and challenge.keyed
    from_client = SessionCipher(relay.send, relay.receive, False)
    from_relay = SessionCipher(client.send, client.receive, False)
    opened = []
    for datagram in datagrams[5:11]:
        if isinstance(datagram, wire.Protected):
            reader = from_relay if datagram.kind == T.PATH_CHALLENGE else from_client
            opened.append(wire.decode_session(datagram, reader.open(datagram)))
    assert opened == [
        wire.Data(TOKEN, 12, 3, 0b101, 7, 0, (SAY,)),
        wire.Ack(TOKEN, 13, 8, 0),
        wire.Ping(TOKEN, 14, 8, 0),
        wire.PathChallenge(TOKEN, 15, bytes.fromhex("cafebabedeadbeef")),
        wire.PathResponse(TOKEN, 16, bytes.fromhex("cafebabedeadbeef")),
    ]
    reset = datagrams[8]
    assert isinstance(reset, wire.Reset) and reset.reset_token == vector("reset_token")
    assert datagrams[11] == wire.Busy(NONCE, 250)
    assert [m.decode_message(d) for d in found[DATAGRAM_EXAMPLES:]] == [
        m.ChatMessage(42, 1790000000, "bob", "hi"),
        m.Posted(42),
        m.Welcome("alice", ("alice", "bob"), 41, 1, 0, 2),
        m.Welcome("carol", ("alice", "bob", "carol"), 900, 1, 0, 1000),
        m.JoinedBatch(43, 1790000001, ("carol", "dave"), ("erin",)),
        m.LeftBatch(44, 1790000002, ("carol", "dave"), (0, 1), ("bye", "timed out")),
        m.WhoPage("bob"),
        m.MembersPage(1000, "bob", ("carol", "dave"), True),
    ]
    assert len({type(d) for d in datagrams}) + len(wire.SESSION_TYPES) - 1 == len(wire.DatagramType)


# protocol.md 10 of version 1: its HELLO, as a version 1 client sends it.
VERSION_1_HELLO = bytes.fromhex("940101c4080102030405060708c504a0") + bytes(1184)


def hello_of(version: int) -> bytes:
    """A HELLO of another version, 1200 bytes long."""
    padding = 1200 - len(msgpack.packb([version, 1, NONCE, b""])) - 1
    return msgpack.packb([version, 1, NONCE, bytes(padding)])


@pytest.mark.parametrize(
    ("asking", "answer_version"),
    [(VERSION_1_HELLO, 1), (hello_of(2), 2), (hello_of(4), 4), (hello_of(200), 3)],
)
def test_other_versions_are_told_in_their_own_version_which_one_this_is(
    asking: bytes, answer_version: int
) -> None:
    """protocol.md 3.1: a version 1 client decodes only version 1 datagrams, so its REJECT
    VERSION comes as one, bound to the hash of its request."""
    assert len(asking) == wire.MIN_INITIAL_SIZE
    relay = RelayCore(RelayConfig(), 0.0, random.Random(1).randbytes)
    relay.receive_datagram(asking, ("192.0.2.1", 5000), 0.0)
    ((answer, _),) = relay.datagrams_to_send(0.0)
    reason = "this relay speaks udpchat protocol version 3"
    assert answer == msgpack.packb(
        [answer_version, 5, wire.request_hash(asking), 4, reason], use_bin_type=True
    )
    assert reason in SPEC.read_text(encoding="utf-8")
