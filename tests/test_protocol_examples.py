"""The hex examples in protocol.md decode to what the text says they are, so the contract
cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from udpchat import messages as m
from udpchat import wire
from udpchat.seal import Sealer, derive_room_key

SPEC = Path(__file__).resolve().parent.parent / "protocol.md"


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


def test_every_datagram_and_message_example_decodes_as_described() -> None:
    found = examples()
    datagrams = [wire.decode_datagram(d) for d in found[:11]]
    assert [type(d) for d in datagrams] == [
        wire.Hello,
        wire.Challenge,
        wire.Join,
        wire.Accept,
        wire.Reject,
        wire.Data,
        wire.Ack,
        wire.Ping,
        wire.Reset,
        wire.PathChallenge,
        wire.PathResponse,
    ]
    for data, datagram in zip(found[:11], datagrams, strict=True):
        assert wire.encode(datagram) == data  # the examples are canonical encodings
    data_example = datagrams[5]
    assert isinstance(data_example, wire.Data)
    assert (data_example.pn, data_example.ack, data_example.ack_bits, data_example.seq) == (
        12,
        3,
        0b101,
        7,
    )
    msgid = bytes.fromhex("1122334455667788")
    assert m.decode_message(data_example.chunks[0]) == m.Say("hi", msgid)
    challenge = datagrams[1]
    assert isinstance(challenge, wire.Challenge)
    assert challenge.salt == bytes(range(0x10, 0x20))
    assert [m.decode_message(d) for d in found[11:]] == [
        m.ChatMessage(42, 1790000000, "bob", "hi"),
        m.Posted(42),
        m.Welcome("alice", ("alice", "bob"), 41, 1, 0),
    ]
    types_covered = {type(d) for d in datagrams}
    assert len(types_covered) == len(wire.DatagramType) - 1  # all but SEALED, shown in words


def test_the_room_key_test_vector() -> None:
    """protocol.md 8.3: passphrase, salt, nonce and datagram give exactly the sealed bytes
    shown, with the real scrypt and ChaCha20-Poly1305."""
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("### 8.3 Test vector") : text.index("### 8.4")]
    lines = [line.strip() for line in section.splitlines() if line.startswith("    ")]
    key = bytes.fromhex("".join(x.removeprefix("key:") for x in lines if x.startswith("key:")))
    sealed = bytes.fromhex(
        "".join(x.removeprefix("sealed:") for x in lines if x.startswith("sealed:"))
    )
    salt = bytes.fromhex("101112131415161718191a1b1c1d1e1f")
    assert f"relay salt `{salt.hex()}`" in section
    assert derive_room_key("correct horse battery staple", salt) == key
    ack = examples()[6]
    assert wire.decode_datagram(ack) == wire.Ack(bytes.fromhex("a1b2c3d4e5f60718"), 13, 8, 0)
    nonce = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
    sealer = Sealer(key, lambda size: nonce)
    assert len(sealed) == 99
    assert sealer.seal(ack) == sealed
    assert sealer.open(sealed) == ack
