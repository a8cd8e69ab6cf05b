"""Datagram and message codecs: round trips, exact sizes, and garbage that must only ever
raise DecodeError."""

from __future__ import annotations

import contextlib
import hashlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpchat import messages as m
from udpchat import session_bytes, wire

pytestmark = pytest.mark.unit

TOKEN = bytes(range(8))
NONCE = b"\x01" * 8


def every_datagram() -> list[wire.Datagram]:
    return [
        wire.Hello(NONCE),
        wire.Challenge(NONCE, b"c" * 24, b"K" * 32, False),
        wire.Challenge(NONCE, b"c" * 24, b"K" * 32, True),
        wire.Join(NONCE, b"c" * 24, b"h" * 80),
        wire.Accept(NONCE, TOKEN, b"h" * 80),
        wire.Reject(NONCE, wire.RejectCode.NICK_TAKEN, "nickname taken"),
        wire.Busy(NONCE, 250),
        wire.Reset(TOKEN, b"r" * 16),
        *(wire.Protected(kind, TOKEN, 7, b"s" * 40) for kind in sorted(wire.SESSION_TYPES)),
    ]


def every_session_datagram() -> list[wire.SessionDatagram]:
    return [
        wire.Data(TOKEN, 7, 3, 0b101, 4, 0, (b"hi", b"there")),
        wire.Ack(TOKEN, 8, 5, 0),
        wire.Ping(TOKEN, 9, 5, 1),
        wire.PathChallenge(TOKEN, 10, b"p" * 8),
        wire.PathResponse(TOKEN, 11, b"p" * 8),
    ]


@pytest.mark.parametrize("datagram", every_datagram(), ids=lambda d: type(d).__name__)
def test_round_trip(datagram: wire.Datagram) -> None:
    encoded = wire.encode(datagram)
    assert len(encoded) <= wire.MAX_DATAGRAM_SIZE
    assert wire.decode_datagram(encoded) == datagram


@pytest.mark.parametrize("datagram", every_session_datagram(), ids=lambda d: type(d).__name__)
def test_session_fields_round_trip(datagram: wire.SessionDatagram) -> None:
    kind, fields = wire.session_fields(datagram)
    envelope = wire.Protected(kind, datagram.token, datagram.pn, b"")
    assert wire.decode_session(envelope, fields) == datagram


@pytest.mark.parametrize("size", [0, 16, 255, 256, 1166])
@pytest.mark.parametrize(
    ("pn", "pn_bytes"),
    [(0, "00"), (127, "7f"), (128, "cc80"), (2**16, "ce00010000"), (2**64 - 1, "cf" + "ff" * 8)],
)
def test_a_session_datagram_is_type_token_pn_then_sealed(size: int, pn: int, pn_bytes: str) -> None:
    """protocol.md 3: the compact envelope, ``pn`` a msgpack uint in its shortest form."""
    sealed = bytes(range(256)) * 5
    sealed = sealed[:size]
    header = session_bytes.session_header(wire.DatagramType.DATA, TOKEN, pn)
    assert header == b"\x06" + TOKEN + bytes.fromhex(pn_bytes)
    encoded = session_bytes.encode_session(wire.DatagramType.DATA, TOKEN, pn, sealed)
    assert encoded == header + sealed
    if len(encoded) <= wire.MAX_DATAGRAM_SIZE:
        expected = wire.Protected(wire.DatagramType.DATA, TOKEN, pn, sealed)
        assert wire.decode_datagram(encoded) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x07" + TOKEN, "shorter than its header"),
        (b"\x07" + TOKEN + b"\xcd\x01", "shorter than its header"),
        (b"\x07" + TOKEN + b"\xcc\x05" + bytes(16), "shortest form"),
        (b"\x07" + TOKEN + b"\xcd\x00\xff" + bytes(16), "shortest form"),
        (b"\x07" + TOKEN + b"\xd0\x05" + bytes(16), "unsigned integer"),
        (b"\x07" + TOKEN + b"\xc0" + bytes(16), "unsigned integer"),
        (b"\x07" + TOKEN + b"\x00" + bytes(1200), "limit"),
    ],
)
def test_a_malformed_session_header_is_named(data: bytes, reason: str) -> None:
    with pytest.raises(wire.DecodeError, match=reason):
        wire.decode_datagram(data)


def test_join_and_accept_payloads_round_trip() -> None:
    for resume in (None, wire.Resume(b"E" * 8, TOKEN, 41, b"P" * wire.RESUME_PROOF_SIZE)):
        payload = wire.encode_join_payload("alice", resume)
        assert wire.decode_join_payload(payload) == wire.JoinPayload("alice", resume)
    accept = wire.AcceptPayload(b"E" * 8, 1000, 10000, b"r" * 16)
    assert wire.decode_accept_payload(wire.encode_accept_payload(accept)) == accept


def test_initial_datagrams_are_padded_to_full_size() -> None:
    assert len(wire.encode_hello(NONCE)) == wire.MIN_INITIAL_SIZE
    for size in (48, 200, 600):
        assert len(wire.encode_join(NONCE, b"c" * 40, bytes(size))) == wire.MIN_INITIAL_SIZE


def test_answers_to_unvalidated_addresses_are_smaller_than_requests() -> None:
    hello = wire.encode_hello(NONCE)
    challenge = wire.encode_challenge(NONCE, b"c" * wire.MAX_COOKIE_SIZE, b"K" * 32, True)
    reject = wire.encode_reject(NONCE, wire.RejectCode.VERSION, "x" * wire.MAX_REASON_BYTES)
    assert len(challenge) < len(hello)
    assert len(reject) < len(hello)


def test_oversized_datagram_is_rejected() -> None:
    big = msgpack.packb(
        [wire.PROTOCOL_VERSION, wire.DatagramType.ACCEPT, NONCE, TOKEN, b"x" * 1300]
    )
    with pytest.raises(wire.DecodeError, match="limit"):
        wire.decode_datagram(big)


@pytest.mark.parametrize(
    "value, reason",
    [
        ([1, 7, TOKEN, 0, b"s"], "version"),
        ([2, 7, TOKEN, 0, b"s"], "version"),  # the array envelope of version 2
        ([3, 99, TOKEN, 0, b"s"], "unknown datagram type"),
        ([3, 7, TOKEN, 0, b"s"], "unknown datagram type"),  # session datagrams are no arrays
        ([3, 3, NONCE, b"c", "h", b""], "handshake"),
        ([3, 2, NONCE, b"c", b"k" * 31, True], "relay_key"),
        ([3, 2, NONCE, b"c", b"k" * 32, 1], "keyed"),
        ([3, 9, TOKEN, b"r" * 16], "unknown datagram type"),  # a RESET is no array either
        ([3, 4, NONCE, TOKEN[:4], b"h"], "token"),
        ([3, 4, NONCE, TOKEN, "h"], "handshake"),
        ([3, 4, NONCE, TOKEN, b"h", b"t"], "ACCEPT has"),
        ({"v": 1}, "array"),
        ([3, 15, b"n" * 12, b"ct"], "unknown datagram type"),
        ([3, 5, b"", 5, "no nonce"], "nonce must be 8 bytes"),
        ([3, 5, b"n" * 4, 4, "short nonce"], "nonce must be 8 bytes"),
    ],
)
def test_invalid_fields_are_named(value: object, reason: str) -> None:
    with pytest.raises(wire.DecodeError, match=reason):
        wire.decode_datagram(msgpack.packb(value))


@pytest.mark.parametrize("size", [0, 1, 24, 26, 40])
def test_a_reset_is_exactly_type_token_and_reset_token(size: int) -> None:
    reset = wire.encode_reset(TOKEN, b"r" * 16)
    assert reset == b"\x09" + TOKEN + b"r" * 16 and len(reset) == wire.RESET_SIZE == 25
    with pytest.raises(wire.DecodeError, match="RESET is 25 bytes"):
        wire.decode_datagram((reset + bytes(40))[:size] if size else b"\x09")


@pytest.mark.parametrize(
    "kind, fields, reason",
    [
        (7, [0, 1 << 63], "ack_bits"),
        (7, [0, 0, 0], "ACK has"),
        (6, [0, 0, 0, 0], "chunk"),
        (6, [0, 0, 0, False, b"x"], "flags"),
        (6, [0, 0, 0, 4, b"x"], "flags"),
        (10, [b"p" * 7], "path data"),
        (8, {"a": 1}, "array"),
    ],
)
def test_invalid_session_fields_are_named(kind: int, fields: object, reason: str) -> None:
    envelope = wire.Protected(wire.DatagramType(kind), TOKEN, 0, b"")
    with pytest.raises(wire.DecodeError, match=reason):
        wire.decode_session(envelope, msgpack.packb(fields))


def test_request_hash_is_the_first_8_bytes_of_sha256() -> None:
    hello = wire.encode_hello(NONCE)
    assert wire.request_hash(hello) == hashlib.sha256(hello).digest()[:8]
    assert len(wire.request_hash(b"")) == wire.HANDSHAKE_NONCE_SIZE


def test_unsupported_version_is_distinguishable() -> None:
    with pytest.raises(wire.UnsupportedVersion) as info:
        wire.decode_datagram(msgpack.packb([7, 1, NONCE, b""]))
    assert info.value.version == 7


@settings(max_examples=1000)
@given(st.binary(max_size=1400))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(wire.DecodeError):
        wire.decode_datagram(data)
    with contextlib.suppress(wire.DecodeError):
        m.decode_message(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=1000)
@given(
    st.integers(0, 3),
    st.integers(0, 40),
    st.lists(msgpack_values, max_size=10),
)
def test_arbitrary_msgpack_values_only_raise_decode_error(
    version: int, kind: int, fields: list[object]
) -> None:
    for value in ([version, kind, *fields], [kind, *fields], fields):
        data = msgpack.packb(value)
        for decode in (wire.decode_datagram, m.decode_message):
            with contextlib.suppress(wire.DecodeError):
                decode(data)


@settings(max_examples=500)
@given(st.sampled_from(every_datagram()), st.data())
def test_truncations_and_bit_flips_only_raise_decode_error(
    datagram: wire.Datagram, data: st.DataObject
) -> None:
    encoded = bytearray(wire.encode(datagram))
    cut = data.draw(st.integers(0, len(encoded)))
    with contextlib.suppress(wire.DecodeError):
        wire.decode_datagram(bytes(encoded[:cut]))
    i = data.draw(st.integers(0, len(encoded) - 1))
    encoded[i] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(wire.DecodeError):
        wire.decode_datagram(bytes(encoded))


def every_message() -> list[m.Message]:
    return [
        m.Say("hello"),
        m.Action("waves"),
        m.PrivateSend("bob", "psst"),
        m.NickRequest("carol"),
        m.Who(),
        m.Quit("bye"),
        m.Welcome("alice", ("alice", "bob"), 41, 1, 0, 2),
        m.Welcome("carol", ("alice", "bob", "carol"), 900, 1, 0, 1000),
        m.ChatMessage(42, 1_790_000_000, "bob", "hi"),
        m.ActionMessage(43, 1_790_000_000, "bob", "waves"),
        m.Joined(44, 1_790_000_000, "dave"),
        m.Left(45, 1_790_000_000, "dave", m.LeaveReason.TIMEOUT, "timed out"),
        m.NickChanged(46, 1_790_000_000, "carol", "caroline"),
        m.Posted(47),
        m.Refused("slow down"),
        m.Private(1_790_000_000, "bob", "alice", "psst"),
        m.Members(("alice", "bob")),
        m.Error("no such nickname: zed"),
        m.Shutdown("relay is going away"),
    ]


@pytest.mark.parametrize("message", every_message(), ids=lambda x: type(x).__name__)
def test_message_round_trip(message: m.Message) -> None:
    assert m.decode_message(m.encode_message(message)) == message


def test_text_limit() -> None:
    assert m.text_error("é" * (m.MAX_TEXT_BYTES // 2)) is None
    error = m.text_error("é" * (m.MAX_TEXT_BYTES // 2 + 1))
    assert error is not None and "limit" in error
    assert m.text_error("") == "empty message"
    with pytest.raises(wire.DecodeError):
        m.decode_message(msgpack.packb([m.MessageKind.SAY, "x" * (m.MAX_TEXT_BYTES + 1)]))


@pytest.mark.parametrize("datagram", every_datagram(), ids=lambda d: type(d).__name__)
def test_handshake_requests_are_told_apart_by_their_first_bytes(datagram: wire.Datagram) -> None:
    encoded = wire.encode(datagram)
    assert wire.is_handshake_request(encoded) == isinstance(datagram, (wire.Hello, wire.Join))


@given(st.binary(max_size=8))
def test_handshake_triage_takes_any_bytes(data: bytes) -> None:
    wire.is_handshake_request(data)  # never raises, whatever arrives


UINTS = st.one_of(
    st.integers(0, 0x80),
    st.sampled_from([0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x100000000]),
    st.integers(0, wire.MAX_UINT),
)


@given(
    UINTS,
    st.integers(0, wire.MAX_ACK_BITS),
    UINTS,
    st.integers(0, wire.DATA_FLAGS),
    st.lists(st.binary(min_size=1, max_size=260), min_size=1, max_size=wire.MAX_CHUNKS),
)
def test_the_hand_written_field_encoders_write_what_the_schemas_write(
    ack: int, bits: int, seq: int, flags: int, chunks: list[bytes]
) -> None:
    """DATA, ACK and PING fields are packed by hand on the hot path: byte for byte what
    msgpack writes from their schemas, and they decode back to the same fields."""
    fields = session_bytes.data_fields(ack, bits, seq, flags, chunks)
    assert fields == wire.SESSION.schema(wire.Data).pack(ack, bits, seq, flags, chunks)
    assert fields == msgpack.packb([ack, bits, seq, flags, *chunks], use_bin_type=True)
    envelope = wire.Protected(wire.DatagramType.DATA, TOKEN, 0, b"")
    assert wire.decode_session(envelope, fields) == wire.Data(
        TOKEN, 0, ack, bits, seq, flags, tuple(chunks)
    )
    assert session_bytes.ack_fields(ack, bits) == wire.SESSION.schema(wire.Ack).pack(ack, bits)
    assert session_bytes.encode_uint(seq) == msgpack.packb(seq)
    assert session_bytes.session_header(wire.DatagramType.ACK, TOKEN, seq) == (
        bytes((wire.DatagramType.ACK,)) + TOKEN + msgpack.packb(seq)
    )


def test_long_chunks_take_the_longer_bin_headers() -> None:
    for size in (255, 256, 65535, 65536):
        chunk = b"c" * size
        assert session_bytes.data_fields(1, 0, 2, 0, [chunk]) == msgpack.packb(
            [1, 0, 2, 0, chunk], use_bin_type=True
        )


def test_a_decoded_envelope_keeps_the_header_it_was_read_from() -> None:
    for pn in (0, 0x7F, 0x80, 0x10000, 2**40):
        header = session_bytes.session_header(wire.DatagramType.PING, TOKEN, pn)
        envelope = wire.decode_datagram(header + b"s" * 20)
        assert isinstance(envelope, wire.Protected)
        assert envelope.header == header
        assert envelope == wire.Protected(wire.DatagramType.PING, TOKEN, pn, b"s" * 20)
