"""The datagram format, validated field by field.

protocol.md is the contract; this module is its executable form. A handshake datagram is
one msgpack array ``[version, type, ...fields]``; a session datagram is the compact
``type || token || pn || sealed`` (its type byte, never a msgpack array's first byte,
tells the two apart), whose fields after ``pn`` are sealed (udpchat.seal) and decoded here
once opened.
``decode_datagram`` is the only door through which bytes from
the network enter the program: it checks every type, range and length and raises
``DecodeError`` and nothing else, so callers can count and drop garbage with a single
``except``.

Each datagram type is one dataclass whose fields carry their wire type (udpchat.schema):
the decoder and the encoders are compiled from it, so a field's place, type and limits are
written once, next to the protocol.md table they come from. The session header and the
fields of DATA, ACK and PING, packed for every datagram a link sends, are also written by
hand, in udpchat.session_bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Annotated, TypeVar, cast

from udpchat.schema import Family, Nested
from udpchat.wiretypes import MAX_UINT as MAX_UINT
from udpchat.wiretypes import Bin, Bool, Rest, Str, UInt, unpack
from udpchat.wiretypes import DecodeError as DecodeError
from udpchat.wiretypes import fail as fail
from udpchat.wiretypes import pack as pack

__all__ = [
    "DATAGRAMS",
    "DATA_FIELDS_OVERHEAD",
    "DATA_FLAGS",
    "EPOCH_SIZE",
    "HANDSHAKE_NONCE_SIZE",
    "LAZY",
    "MAX_ACK_BITS",
    "MAX_BUSY_RETRY_MS",
    "MAX_CHUNKS",
    "MAX_COOKIE_SIZE",
    "MAX_DATAGRAM_SIZE",
    "MAX_HANDSHAKE_SIZE",
    "MAX_NICK_BYTES",
    "MAX_REASON_BYTES",
    "MAX_TIMER_MS",
    "MAX_VERSION",
    "MIN_INITIAL_SIZE",
    "MORE",
    "PATH_DATA_SIZE",
    "PAYLOADS",
    "PROTOCOL_VERSION",
    "RELAY_KEY_SIZE",
    "RESET_SIZE",
    "RESET_TOKEN_SIZE",
    "RESUME_PROOF_SIZE",
    "SESSION",
    "SESSION_TYPES",
    "TOKEN_SIZE",
    "WINDOW",
    "Accept",
    "AcceptPayload",
    "Ack",
    "AckBits",
    "Busy",
    "Challenge",
    "Cookie",
    "Data",
    "Datagram",
    "DatagramType",
    "Epoch",
    "Handshake",
    "Hello",
    "Join",
    "JoinPayload",
    "Millis",
    "Nonce",
    "P",
    "PathChallenge",
    "PathData",
    "PathResponse",
    "Ping",
    "Protected",
    "Reject",
    "RejectCode",
    "Reset",
    "ResetToken",
    "Resume",
    "SessionDatagram",
    "Token",
    "Uint",
    "UnsupportedVersion",
    "datagram_type",
    "decode_accept_payload",
    "decode_datagram",
    "decode_join_payload",
    "decode_session",
    "encode",
    "encode_accept",
    "encode_accept_payload",
    "encode_busy",
    "encode_challenge",
    "encode_hello",
    "encode_join",
    "encode_join_payload",
    "encode_reject",
    "encode_reset",
    "is_handshake_request",
    "path_fields",
    "request_hash",
    "session_fields",
]

PROTOCOL_VERSION = 3
# protocol.md "Size limits": the largest UDP payload either side sends or accepts; safe
# under the 1280-byte IPv6 minimum MTU with room for IP and UDP headers.
MAX_DATAGRAM_SIZE = 1200
# protocol.md "Handshake": HELLO and JOIN are padded to this size so that no answer sent to
# an unvalidated address is larger than what it received (anti-amplification).
MIN_INITIAL_SIZE = 1200
TOKEN_SIZE = 8
# protocol.md 2: the handshake nonce a client puts in HELLO and JOIN (not an AEAD nonce:
# those are 12 bytes, made from the packet number by udpchat.noise.aead_nonce).
HANDSHAKE_NONCE_SIZE = 8
# protocol.md 4.3: the longest wait a BUSY may ask for, below a cookie's lifetime.
MAX_BUSY_RETRY_MS = 5000
PATH_DATA_SIZE = 8
EPOCH_SIZE = 8
# protocol.md 4: the relay's static X25519 public key, sent in every CHALLENGE.
RELAY_KEY_SIZE = 32
# protocol.md 7.2: the stateless reset token, from ACCEPT's payload and in RESET.
RESET_TOKEN_SIZE = 16
# protocol.md 4.2: a resume proves it comes from the holder of the old session.
RESUME_PROOF_SIZE = 16
# protocol.md 4: a Noise handshake message (32-byte key, payload, 16-byte tag).
MAX_HANDSHAKE_SIZE = 1024
MAX_COOKIE_SIZE = 64
# protocol.md 3.1: versions a REJECT VERSION may be written in (a positive fixint).
MAX_VERSION = 127
# protocol.md "Reliability": the receive window, in packets; ACK bitmaps cover the
# WINDOW - 1 sequence numbers after the cumulative ACK.
WINDOW = 64
# protocol.md 2 and 3: chunks in one DATA datagram at most. Every chunk costs a receiver an
# object while it decodes the datagram, however short the chunk: a sender that bundles tiny
# messages puts at most this many in one packet, and a receiver drops a DATA with more.
MAX_CHUNKS = 64
MAX_ACK_BITS = (1 << (WINDOW - 1)) - 1
# protocol.md 5.1 and 5.3: the bits of a DATA packet's ``flags``.
MORE = 1  # its last chunk continues in the packet with the next seq
LAZY = 2  # its sender waits for its ACK up to LAZY_ACK_DELAY longer than for others
DATA_FLAGS = MORE | LAZY
MAX_NICK_BYTES = 128
MAX_REASON_BYTES = 512
# protocol.md 3: the longest heartbeat and timeout a relay may announce.
MAX_TIMER_MS = 3_600_000


class DatagramType(IntEnum):
    HELLO = 1
    CHALLENGE = 2
    JOIN = 3
    ACCEPT = 4
    REJECT = 5
    DATA = 6
    ACK = 7
    PING = 8
    RESET = 9
    PATH_CHALLENGE = 10
    PATH_RESPONSE = 11
    BUSY = 12


SESSION_TYPES = frozenset(
    {
        DatagramType.DATA,
        DatagramType.ACK,
        DatagramType.PING,
        DatagramType.PATH_CHALLENGE,
        DatagramType.PATH_RESPONSE,
    }
)


class RejectCode(IntEnum):
    NICK_TAKEN = 1
    NICK_INVALID = 2
    RELAY_FULL = 3
    VERSION = 4
    BAD_KEY = 5
    TOO_MANY_ATTEMPTS = 6
    SHUTTING_DOWN = 7
    UNAVAILABLE = 8  # protocol.md 6.8: the room's shared store cannot be reached


class UnsupportedVersion(DecodeError):
    """A datagram from another protocol version; a relay may answer it with REJECT."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unsupported protocol version {version}")
        self.version = version


# The field types of protocol.md 3, by meaning.
Nonce = Annotated[bytes, Bin(HANDSHAKE_NONCE_SIZE)]
Token = Annotated[bytes, Bin(TOKEN_SIZE)]
Cookie = Annotated[bytes, Bin(min_size=1, max_size=MAX_COOKIE_SIZE)]
Handshake = Annotated[bytes, Bin(max_size=MAX_HANDSHAKE_SIZE)]
Epoch = Annotated[bytes, Bin(EPOCH_SIZE)]
ResetToken = Annotated[bytes, Bin(RESET_TOKEN_SIZE)]
Uint = Annotated[int, UInt()]
AckBits = Annotated[int, UInt(MAX_ACK_BITS)]
PathData = Annotated[bytes, Bin(PATH_DATA_SIZE, label="path data")]
Millis = Annotated[int, UInt(MAX_TIMER_MS)]

# Datagrams are [version, type, ...fields]; the sealed fields of a session datagram are an
# array of their own, whose token and packet number are in the clear header around them.
DATAGRAMS: Family[Datagram] = Family("datagram", version=PROTOCOL_VERSION)
SESSION: Family[SessionDatagram] = Family("session", tag_in_header=False, outside=("token", "pn"))
PAYLOADS: Family[object] = Family("payload", tag_in_header=False)


@DATAGRAMS.register(DatagramType.HELLO, padded=MIN_INITIAL_SIZE)
@dataclass(frozen=True, slots=True)
class Hello:
    nonce: Nonce


@DATAGRAMS.register(DatagramType.CHALLENGE)
@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: Nonce
    cookie: Cookie
    relay_key: Annotated[bytes, Bin(RELAY_KEY_SIZE)]  # the relay's static X25519 public key
    keyed: Annotated[bool, Bool()]  # whether the room needs a room key


@PAYLOADS.register()
@dataclass(frozen=True, slots=True)
class Resume:
    """What a rejoining client remembers of its previous session."""

    epoch: Epoch
    token: Token
    last_seq: Uint
    # RESUME_PROOF_SIZE bytes, made for the JOIN that carries it
    proof: Annotated[bytes, Bin(RESUME_PROOF_SIZE, or_empty=True)] = b""


@DATAGRAMS.register(DatagramType.JOIN, padded=MIN_INITIAL_SIZE)
@dataclass(frozen=True, slots=True)
class Join:
    nonce: Nonce
    cookie: Cookie
    handshake: Handshake  # Noise message 1; its payload is a JoinPayload


@PAYLOADS.register()
@dataclass(frozen=True, slots=True)
class JoinPayload:
    """What JOIN's handshake message carries, encrypted."""

    nick: Annotated[str, Str(MAX_NICK_BYTES)]
    resume: Annotated[Resume | None, Nested(Resume, nullable=True)]


@DATAGRAMS.register(DatagramType.ACCEPT)
@dataclass(frozen=True, slots=True)
class Accept:
    nonce: Nonce
    token: Token
    handshake: Handshake  # Noise message 2; its payload is an AcceptPayload


@PAYLOADS.register()
@dataclass(frozen=True, slots=True)
class AcceptPayload:
    """What ACCEPT's handshake message carries, encrypted."""

    epoch: Epoch
    heartbeat_ms: Millis
    timeout_ms: Millis
    reset_token: ResetToken


@DATAGRAMS.register(DatagramType.REJECT)
@dataclass(frozen=True, slots=True)
class Reject:
    nonce: Nonce
    code: Annotated[int, UInt(255)]
    reason: Annotated[str, Str(MAX_REASON_BYTES)]


@DATAGRAMS.register(DatagramType.BUSY)
@dataclass(frozen=True, slots=True)
class Busy:
    """protocol.md 4.3: the relay is admitting others; send the same JOIN again in
    ``retry_ms`` milliseconds. Bound to the JOIN by its nonce, like a REJECT."""

    nonce: Nonce
    retry_ms: Annotated[int, UInt(MAX_BUSY_RETRY_MS)]


# The records made for every session datagram (its envelope, then its fields) are not
# frozen: a frozen dataclass sets each field through object.__setattr__, which made
# building one 3 to 5 times dearer, paid twice per datagram. Nothing changes them once
# decoded; they hash by value like the frozen ones.
@SESSION.register(DatagramType.DATA)
@dataclass(slots=True, unsafe_hash=True)  # not frozen: see above Data
class Data:
    token: bytes
    pn: int
    ack: Uint
    ack_bits: AckBits
    seq: Uint
    flags: Annotated[int, UInt(DATA_FLAGS)]
    # protocol.md 5.1: a chunk is a whole message or a piece of one, never empty.
    chunks: Annotated[tuple[bytes, ...], Rest(Bin(min_size=1), 1, MAX_CHUNKS, label="chunk")]

    @property
    def more(self) -> bool:
        """The last chunk continues in the next packet (protocol.md 5.1)."""
        return bool(self.flags & MORE)

    @property
    def lazy(self) -> bool:
        """The sender can wait longer for this packet's ACK (protocol.md 5.3)."""
        return bool(self.flags & LAZY)


@SESSION.register(DatagramType.ACK)
@dataclass(slots=True, unsafe_hash=True)  # not frozen: see above Data
class Ack:
    token: bytes
    pn: int
    ack: Uint
    ack_bits: AckBits


@SESSION.register(DatagramType.PING)
@dataclass(slots=True, unsafe_hash=True)  # not frozen: see above Data
class Ping:
    token: bytes
    pn: int
    ack: Uint
    ack_bits: AckBits


@dataclass(frozen=True, slots=True)
class Reset:
    """protocol.md 7.2. On the wire: ``type`` (1 byte, 9) || ``token`` || ``reset_token``,
    25 bytes, smaller than any session datagram (so never an answer larger than its cause)."""

    token: bytes
    reset_token: bytes


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see above Data
class Protected:
    """A session datagram as it arrives: the header in the clear, the rest sealed.

    On the wire (protocol.md 3): ``type`` (1 byte) || ``token`` (TOKEN_SIZE bytes) || ``pn``
    (a msgpack uint, shortest form) || ``sealed`` (the rest of the datagram).
    """

    kind: DatagramType
    token: Token
    pn: Uint
    sealed: Annotated[bytes, Bin()]
    # The bytes ``kind``, ``token`` and ``pn`` were read from (the seal's associated data),
    # kept by ``decode_datagram`` so that opening does not encode them again; empty when
    # the envelope was built from its fields, and then made from them.
    header: bytes = field(default=b"", compare=False, repr=False)


@SESSION.register(DatagramType.PATH_CHALLENGE)
@dataclass(frozen=True, slots=True)
class PathChallenge:
    token: bytes
    pn: int
    data: PathData


@SESSION.register(DatagramType.PATH_RESPONSE)
@dataclass(frozen=True, slots=True)
class PathResponse:
    token: bytes
    pn: int
    data: PathData


Datagram = Hello | Challenge | Join | Accept | Reject | Busy | Reset | Protected
SessionDatagram = Data | Ack | Ping | PathChallenge | PathResponse

# Bytes a DATA plaintext needs besides its chunks (each chunk costs its length plus a 2 to
# 5 byte bin header), at worst: array header (3), ack, ack_bits, seq (9 each) and flags (1).
DATA_FIELDS_OVERHEAD = 3 + 9 + 9 + 9 + 1

P = TypeVar("P")
_DECODE_DATAGRAM = {tag: schema.decode for tag, schema in DATAGRAMS.by_tag.items()}
_DECODE_SESSION = {tag: schema.decode for tag, schema in SESSION.by_tag.items()}


# The first byte of a session datagram (and of a RESET) is its type; a handshake datagram
# starts with a msgpack fixarray (0x91..0x9f), so the two never mix.
_SESSION_HEADS = {int(t): t for t in SESSION_TYPES}
RESET_SIZE = 1 + TOKEN_SIZE + RESET_TOKEN_SIZE
_UINT_WIDTHS = {0xCC: (1, 0x80), 0xCD: (2, 0x100), 0xCE: (4, 0x10000), 0xCF: (8, 0x100000000)}
# The shortest session header: type, token, a one-byte pn (a sealed field shorter than its
# tag is left for the seal to refuse, as any other that does not authenticate).
_MIN_SESSION_SIZE = 1 + TOKEN_SIZE + 1


def decode_datagram(data: bytes) -> Datagram:
    """Decode and validate one datagram; raise ``DecodeError`` for anything else. Session
    datagrams come out as :class:`Protected`: open them, then ``decode_session``."""
    if data:
        head = data[0]
        kind = _SESSION_HEADS.get(head)
        if kind is not None:
            return _decode_protected(kind, data)
        if head == DatagramType.RESET:
            if len(data) != RESET_SIZE:
                fail(f"a RESET is {RESET_SIZE} bytes")
            return Reset(data[1 : 1 + TOKEN_SIZE], data[1 + TOKEN_SIZE :])
    value = unpack(data, MAX_DATAGRAM_SIZE)
    if type(value) is not list or len(value) < 2:
        fail("a datagram is an array of at least version and type")
    version = value[0]
    if type(version) is not int:
        fail("the version is an integer")  # protocol.md 3.1: not even another version
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(version)
    kind = value[1]
    if type(kind) is not int:  # not a bool either: True would pass for 1 in a dict
        fail("type must be an unsigned integer up to 255")
    try:
        decode = _DECODE_DATAGRAM[kind]
    except KeyError:
        fail(f"unknown datagram type {kind}")
    return decode(value)


def _decode_protected(kind: DatagramType, data: bytes) -> Protected:
    """protocol.md 3: ``type || token || pn || sealed``, ``pn`` a msgpack uint in its
    shortest form (the header is authenticated as sent, and has one encoding only)."""
    size = len(data)
    if size > MAX_DATAGRAM_SIZE:
        fail(f"{size} bytes is over the {MAX_DATAGRAM_SIZE}-byte limit")
    if size < _MIN_SESSION_SIZE:
        fail(f"a session datagram of {size} bytes is shorter than its header")
    start = 1 + TOKEN_SIZE
    head = data[start]
    if head < 0x80:
        pn, end = head, start + 1
    else:
        width = _UINT_WIDTHS.get(head)
        if width is None:
            fail("pn must be a msgpack unsigned integer")
        length, least = width
        end = start + 1 + length
        if size < end:
            fail("a session datagram is shorter than its header")
        pn = int.from_bytes(data[start + 1 : end], "big")
        if pn < least:
            fail("pn must be in its shortest form")
    return Protected(kind, data[1:start], pn, data[end:], data[:end])


def decode_session(envelope: Protected, plaintext: bytes) -> SessionDatagram:
    """The session datagram whose opened field plaintext is ``plaintext``."""
    fields = unpack(plaintext, MAX_DATAGRAM_SIZE)
    if type(fields) is not list:
        fail("the sealed fields are an array")
    try:
        decode = _DECODE_SESSION[envelope.kind]
    except KeyError:
        fail(f"{envelope.kind} is not a session datagram type")
    return decode(fields, envelope.token, envelope.pn)


def _decode_payload(cls: type[P], data: bytes) -> P:
    fields = unpack(data, MAX_DATAGRAM_SIZE)
    if type(fields) is not list:
        fail(f"the {cls.__name__} is an array")
    return cast(P, PAYLOADS.schema(cls).decode(fields))


def decode_join_payload(data: bytes) -> JoinPayload:
    return _decode_payload(JoinPayload, data)


def decode_accept_payload(data: bytes) -> AcceptPayload:
    return _decode_payload(AcceptPayload, data)


# --- encoding -------------------------------------------------------------------------------
# Every encoder writes what its dataclass's schema says, in that order; the hot paths (the
# fields of DATA and ACK, the session envelope) pack the values without building an object.


def encode(datagram: Datagram) -> bytes:
    """Encode any datagram object (used by tests and tools; hot paths call encode_* directly)."""
    if isinstance(datagram, Protected):
        from udpchat.session_bytes import encode_session  # it builds on this module

        return encode_session(datagram.kind, datagram.token, datagram.pn, datagram.sealed)
    if isinstance(datagram, Reset):
        return encode_reset(datagram.token, datagram.reset_token)
    return DATAGRAMS.encode(datagram)


def encode_hello(nonce: bytes, size: int = MIN_INITIAL_SIZE) -> bytes:
    """HELLO, padded to ``size``: the padding proves the path and bounds amplification."""
    return DATAGRAMS.schema(Hello).encode(Hello(nonce), size)


def encode_challenge(nonce: bytes, cookie: bytes, relay_key: bytes, keyed: bool) -> bytes:
    return DATAGRAMS.encode(Challenge(nonce, cookie, relay_key, keyed))


def encode_join(
    nonce: bytes, cookie: bytes, handshake: bytes, size: int = MIN_INITIAL_SIZE
) -> bytes:
    return DATAGRAMS.schema(Join).encode(Join(nonce, cookie, handshake), size)


def encode_join_payload(nick: str, resume: Resume | None) -> bytes:
    return PAYLOADS.encode(JoinPayload(nick, resume))


def encode_accept(nonce: bytes, token: bytes, handshake: bytes) -> bytes:
    return DATAGRAMS.encode(Accept(nonce, token, handshake))


def encode_accept_payload(payload: AcceptPayload) -> bytes:
    return PAYLOADS.encode(payload)


def encode_reject(nonce: bytes, code: int, reason: str, version: int = PROTOCOL_VERSION) -> bytes:
    """REJECT; ``nonce`` is the request's nonce, or its ``request_hash`` for VERSION and
    BAD_KEY (protocol.md 4). ``version``: a REJECT VERSION goes out in the requester's."""
    fields = DATAGRAMS.schema(Reject).fields(Reject(nonce, int(code), reason))
    return pack([version, DatagramType.REJECT, *fields])


_HANDSHAKE_REQUEST_HEADS = frozenset(
    bytes((0x90 | count, PROTOCOL_VERSION, kind))
    for count, kind in ((4, DatagramType.HELLO), (6, DatagramType.JOIN))
)


def is_handshake_request(data: bytes) -> bool:
    """Whether ``data`` looks like a HELLO or a JOIN, from its first three bytes alone (a
    fixarray of 4 or 6, the version, the type): a cheap triage before decoding, to answer
    joiners first. A wrong guess only reorders; decoding still judges the datagram."""
    return data[:3] in _HANDSHAKE_REQUEST_HEADS


def encode_busy(nonce: bytes, retry_ms: int) -> bytes:
    return DATAGRAMS.schema(Busy).encode(Busy(nonce, retry_ms))


def request_hash(datagram: bytes) -> bytes:
    """What a REJECT carries in place of the nonce of a request the relay could not read:
    the first 8 bytes of SHA-256 of the whole datagram. Only whoever sent (or saw) the
    datagram knows it, so an off-path attacker cannot forge the answer to it."""
    return hashlib.sha256(datagram).digest()[:HANDSHAKE_NONCE_SIZE]


def encode_reset(token: bytes, reset_token: bytes) -> bytes:
    """protocol.md 7.2: ``9 || token || reset_token``."""
    if len(token) != TOKEN_SIZE or len(reset_token) != RESET_TOKEN_SIZE:
        raise ValueError("a RESET carries a token and a reset token of their sizes")
    return bytes((DatagramType.RESET,)) + token + reset_token


def datagram_type(data: bytes) -> int | None:
    """A datagram's type from its first bytes alone, without validating anything (for
    triage and tools): the first byte of a session datagram or RESET, the second element of
    a handshake datagram's array; ``None`` when it is neither."""
    if not data:
        return None
    head = data[0]
    if head in _SESSION_HEADS or head == DatagramType.RESET:
        return head
    return data[2] if 0x91 <= head <= 0x9F and len(data) > 2 else None


path_fields: Callable[[bytes], bytes] = SESSION.schema(PathChallenge).pack
"""``path_fields(data)``: the plaintext of a PATH_CHALLENGE or PATH_RESPONSE."""


def session_fields(datagram: SessionDatagram) -> tuple[DatagramType, bytes]:
    """The type and field plaintext of a session datagram (for tests and tools)."""
    schema = SESSION.schema(type(datagram))
    assert schema.tag is not None
    return DatagramType(schema.tag), schema.encode(datagram)
