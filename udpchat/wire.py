"""The datagram format: one msgpack array per UDP datagram, validated field by field.

protocol.md is the contract; this module is its executable form. Every datagram is
``[version, type, ...fields]``; a session datagram is ``[version, type, token, pn, sealed]``,
whose fields after ``pn`` are sealed (udpchat.seal) and decoded here once opened.
``decode_datagram`` is the only door through which bytes from
the network enter the program: it checks every type, range and length and raises
``DecodeError`` and nothing else, so callers can count and drop garbage with a single
``except``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NoReturn

import msgpack

from udpchat.errors import ProtocolError

PROTOCOL_VERSION = 2
# protocol.md "Size limits": the largest UDP payload either side sends or accepts; safe
# under the 1280-byte IPv6 minimum MTU with room for IP and UDP headers.
MAX_DATAGRAM_SIZE = 1200
# protocol.md "Handshake": HELLO and JOIN are padded to this size so that no answer sent to
# an unvalidated address is larger than what it received (anti-amplification).
MIN_INITIAL_SIZE = 1200
TOKEN_SIZE = 8
NONCE_SIZE = 8
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
MAX_UINT = (1 << 64) - 1
MAX_NICK_BYTES = 128
MAX_REASON_BYTES = 512


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


class DecodeError(ProtocolError, ValueError):
    """A datagram that is not valid udpchat; the receiver counts and drops it."""


class UnsupportedVersion(DecodeError):
    """A datagram from another protocol version; a relay may answer it with REJECT."""

    def __init__(self, version: int) -> None:
        super().__init__(f"unsupported protocol version {version}")
        self.version = version


@dataclass(frozen=True, slots=True)
class Hello:
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    cookie: bytes
    relay_key: bytes  # the relay's static X25519 public key
    keyed: bool  # whether the room needs a room key


@dataclass(frozen=True, slots=True)
class Resume:
    """What a rejoining client remembers of its previous session."""

    epoch: bytes
    token: bytes
    last_seq: int
    proof: bytes = b""  # RESUME_PROOF_SIZE bytes, made for the JOIN that carries it


@dataclass(frozen=True, slots=True)
class Join:
    nonce: bytes
    cookie: bytes
    handshake: bytes  # Noise message 1; its payload is a JoinPayload


@dataclass(frozen=True, slots=True)
class JoinPayload:
    """What JOIN's handshake message carries, encrypted."""

    nick: str
    resume: Resume | None


@dataclass(frozen=True, slots=True)
class Accept:
    nonce: bytes
    token: bytes
    handshake: bytes  # Noise message 2; its payload is an AcceptPayload


@dataclass(frozen=True, slots=True)
class AcceptPayload:
    """What ACCEPT's handshake message carries, encrypted."""

    epoch: bytes
    heartbeat_ms: int
    timeout_ms: int
    reset_token: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    nonce: bytes
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Data:
    token: bytes
    pn: int
    ack: int
    ack_bits: int
    seq: int
    more: bool
    chunks: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ack:
    token: bytes
    pn: int
    ack: int
    ack_bits: int


@dataclass(frozen=True, slots=True)
class Ping:
    token: bytes
    pn: int
    ack: int
    ack_bits: int


@dataclass(frozen=True, slots=True)
class Reset:
    token: bytes
    reset_token: bytes


@dataclass(frozen=True, slots=True)
class Protected:
    """A session datagram as it arrives: the header in the clear, the rest sealed."""

    kind: DatagramType
    token: bytes
    pn: int
    sealed: bytes


@dataclass(frozen=True, slots=True)
class PathChallenge:
    token: bytes
    pn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PathResponse:
    token: bytes
    pn: int
    data: bytes


Datagram = Hello | Challenge | Join | Accept | Reject | Reset | Protected
SessionDatagram = Data | Ack | Ping | PathChallenge | PathResponse

# Bytes a DATA plaintext needs besides its chunks (each chunk costs its length plus a 2 to
# 5 byte bin header), at worst: array header (3), ack, ack_bits, seq (9 each) and more (1).
DATA_FIELDS_OVERHEAD = 3 + 9 + 9 + 9 + 1


def fail(message: str) -> NoReturn:
    raise DecodeError(message)


def as_uint(value: Any, name: str, limit: int = MAX_UINT) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        fail(f"{name} must be an unsigned integer up to {limit}")
    return value


def as_bin(value: Any, name: str, size: int | None = None, max_size: int | None = None) -> bytes:
    if type(value) is not bytes:
        fail(f"{name} must be binary")
    if size is not None and len(value) != size:
        fail(f"{name} must be {size} bytes")
    if max_size is not None and len(value) > max_size:
        fail(f"{name} is longer than {max_size} bytes")
    return value


def as_str(value: Any, name: str, max_bytes: int) -> str:
    if type(value) is not str:
        fail(f"{name} must be a string")
    if len(value) > max_bytes or len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        fail(f"{name} is longer than {max_bytes} bytes")
    return value


def as_bool(value: Any, name: str) -> bool:
    if type(value) is not bool:
        fail(f"{name} must be a boolean")
    return value


def check_arity(fields: list[Any], count: int, name: str) -> None:
    if len(fields) != count:
        fail(f"{name} has {len(fields)} fields, expected {count}")


def _reject_ext(code: int, data: bytes) -> NoReturn:
    fail(f"msgpack extension type {code} is not used by udpchat")


def unpack(data: bytes, limit: int = MAX_DATAGRAM_SIZE) -> Any:
    """Parse one msgpack value, turning every msgpack failure into ``DecodeError``."""
    if len(data) > limit:
        fail(f"{len(data)} bytes is over the {limit}-byte limit")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_reject_ext,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a dozen unrelated types; one door out.
        raise DecodeError(f"not a msgpack value: {type(exc).__name__}") from None


def _decode_resume(value: Any) -> Resume | None:
    if value is None:
        return None
    if type(value) is not list:
        fail("resume must be nil or an array")
    check_arity(value, 4, "resume")
    return Resume(
        epoch=as_bin(value[0], "resume epoch", EPOCH_SIZE),
        token=as_bin(value[1], "resume token", TOKEN_SIZE),
        last_seq=as_uint(value[2], "resume last_seq"),
        proof=_resume_proof(value[3]),
    )


def _resume_proof(value: Any) -> bytes:
    proof = as_bin(value, "resume proof", None, RESUME_PROOF_SIZE)
    if len(proof) not in (0, RESUME_PROOF_SIZE):
        fail(f"a resume proof is empty or {RESUME_PROOF_SIZE} bytes")
    return proof


def _decode_fields(kind: DatagramType, f: list[Any]) -> Datagram:
    if kind is DatagramType.HELLO:
        check_arity(f, 2, "HELLO")
        as_bin(f[1], "padding")
        return Hello(as_bin(f[0], "nonce", NONCE_SIZE))
    if kind is DatagramType.CHALLENGE:
        check_arity(f, 4, "CHALLENGE")
        return Challenge(
            as_bin(f[0], "nonce", NONCE_SIZE),
            _cookie(f[1]),
            as_bin(f[2], "relay_key", RELAY_KEY_SIZE),
            as_bool(f[3], "keyed"),
        )
    if kind is DatagramType.JOIN:
        check_arity(f, 4, "JOIN")
        as_bin(f[3], "padding")
        return Join(
            nonce=as_bin(f[0], "nonce", NONCE_SIZE),
            cookie=_cookie(f[1]),
            handshake=as_bin(f[2], "handshake", None, MAX_HANDSHAKE_SIZE),
        )
    if kind is DatagramType.ACCEPT:
        check_arity(f, 3, "ACCEPT")
        return Accept(
            nonce=as_bin(f[0], "nonce", NONCE_SIZE),
            token=as_bin(f[1], "token", TOKEN_SIZE),
            handshake=as_bin(f[2], "handshake", None, MAX_HANDSHAKE_SIZE),
        )
    if kind is DatagramType.REJECT:
        check_arity(f, 3, "REJECT")
        return Reject(
            as_bin(f[0], "nonce", NONCE_SIZE),
            as_uint(f[1], "code", 255),
            as_str(f[2], "reason", MAX_REASON_BYTES),
        )
    if kind is DatagramType.RESET:
        check_arity(f, 2, "RESET")
        return Reset(
            as_bin(f[0], "token", TOKEN_SIZE), as_bin(f[1], "reset_token", RESET_TOKEN_SIZE)
        )
    check_arity(f, 3, kind.name)
    return Protected(
        kind, as_bin(f[0], "token", TOKEN_SIZE), as_uint(f[1], "pn"), as_bin(f[2], "sealed")
    )


def _cookie(value: Any) -> bytes:
    cookie = as_bin(value, "cookie", None, MAX_COOKIE_SIZE)
    if not cookie:
        fail("a cookie is 1 to 64 bytes")
    return cookie


def decode_datagram(data: bytes) -> Datagram:
    """Decode and validate one datagram; raise ``DecodeError`` for anything else. Session
    datagrams come out as :class:`Protected`: open them, then ``decode_session``."""
    value = unpack(data)
    if type(value) is not list or len(value) < 2:
        fail("a datagram is an array of at least version and type")
    version = value[0]
    if type(version) is not int:
        fail("the version is an integer")  # protocol.md 3.1: not even another version
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(version)
    raw_type = as_uint(value[1], "type", 255)
    try:
        kind = DatagramType(raw_type)
    except ValueError:
        fail(f"unknown datagram type {raw_type}")
    return _decode_fields(kind, value[2:])


def decode_session(envelope: Protected, plaintext: bytes) -> SessionDatagram:
    """The session datagram whose opened field plaintext is ``plaintext``."""
    f = unpack(plaintext)
    if type(f) is not list:
        fail("the sealed fields are an array")
    kind, token, pn = envelope.kind, envelope.token, envelope.pn
    if kind in (DatagramType.PATH_CHALLENGE, DatagramType.PATH_RESPONSE):
        check_arity(f, 1, kind.name)
        data = as_bin(f[0], "path data", PATH_DATA_SIZE)
        if kind is DatagramType.PATH_CHALLENGE:
            return PathChallenge(token, pn, data)
        return PathResponse(token, pn, data)
    if len(f) < 2:
        fail(f"{kind.name} is too short")
    ack = as_uint(f[0], "ack")
    ack_bits = as_uint(f[1], "ack_bits", MAX_ACK_BITS)
    if kind is DatagramType.ACK:
        check_arity(f, 2, "ACK")
        return Ack(token, pn, ack, ack_bits)
    if kind is DatagramType.PING:
        check_arity(f, 2, "PING")
        return Ping(token, pn, ack, ack_bits)
    if len(f) < 5:
        fail("DATA needs a sequence number, a more flag and at least one chunk")
    if len(f) - 4 > MAX_CHUNKS:
        fail(f"DATA has {len(f) - 4} chunks, more than {MAX_CHUNKS}")
    seq = as_uint(f[2], "seq")
    more = as_bool(f[3], "more")
    chunks = tuple(f[4:])
    for chunk in chunks:
        # A chunk is a whole message or a piece of one, never empty (protocol.md 5.1).
        if type(chunk) is not bytes or not chunk:
            fail("every chunk must be a non-empty bin")
    return Data(token, pn, ack, ack_bits, seq, more, chunks)


def decode_join_payload(data: bytes) -> JoinPayload:
    f = unpack(data)
    if type(f) is not list:
        fail("the JOIN payload is an array")
    check_arity(f, 2, "JOIN payload")
    return JoinPayload(as_str(f[0], "nick", MAX_NICK_BYTES), _decode_resume(f[1]))


def decode_accept_payload(data: bytes) -> AcceptPayload:
    f = unpack(data)
    if type(f) is not list:
        fail("the ACCEPT payload is an array")
    check_arity(f, 4, "ACCEPT payload")
    return AcceptPayload(
        epoch=as_bin(f[0], "epoch", EPOCH_SIZE),
        heartbeat_ms=as_uint(f[1], "heartbeat_ms", 3_600_000),
        timeout_ms=as_uint(f[2], "timeout_ms", 3_600_000),
        reset_token=as_bin(f[3], "reset_token", RESET_TOKEN_SIZE),
    )


# --- encoding -------------------------------------------------------------------------------


def pack(value: Any) -> bytes:
    """msgpack-encode (a fresh packer per call: cores run in several threads of one process)."""
    return msgpack.packb(value, use_bin_type=True)


def _padded(fields: list[Any], size: int) -> bytes:
    """Encode ``fields`` with a trailing padding bin so the datagram is ``size`` bytes."""
    bare = pack([*fields, b""])
    missing = size - len(bare)
    if missing <= 0:
        return bare
    # A bin's header grows from 2 to 3 bytes past 255 bytes of content.
    pad_len = missing if missing <= 255 else missing - 1
    out = pack([*fields, bytes(pad_len)])
    assert len(out) == size, len(out)
    return out


def encode_hello(nonce: bytes, size: int = MIN_INITIAL_SIZE) -> bytes:
    """HELLO, padded to ``size``: the padding proves the path and bounds amplification."""
    return _padded([PROTOCOL_VERSION, DatagramType.HELLO, nonce], size)


def encode_challenge(nonce: bytes, cookie: bytes, relay_key: bytes, keyed: bool) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.CHALLENGE, nonce, cookie, relay_key, keyed])


def encode_join(
    nonce: bytes, cookie: bytes, handshake: bytes, size: int = MIN_INITIAL_SIZE
) -> bytes:
    return _padded([PROTOCOL_VERSION, DatagramType.JOIN, nonce, cookie, handshake], size)


def encode_join_payload(nick: str, resume: Resume | None) -> bytes:
    r = None if resume is None else [resume.epoch, resume.token, resume.last_seq, resume.proof]
    return pack([nick, r])


def encode_accept(nonce: bytes, token: bytes, handshake: bytes) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.ACCEPT, nonce, token, handshake])


def encode_accept_payload(payload: AcceptPayload) -> bytes:
    return pack([payload.epoch, payload.heartbeat_ms, payload.timeout_ms, payload.reset_token])


def encode_reject(nonce: bytes, code: int, reason: str, version: int = PROTOCOL_VERSION) -> bytes:
    """REJECT; ``nonce`` is the request's nonce, or its ``request_hash`` for VERSION and
    BAD_KEY (protocol.md 4). ``version``: a REJECT VERSION goes out in the requester's."""
    return pack([version, DatagramType.REJECT, nonce, int(code), reason])


def request_hash(datagram: bytes) -> bytes:
    """What a REJECT carries in place of the nonce of a request the relay could not read:
    the first 8 bytes of SHA-256 of the whole datagram. Only whoever sent (or saw) the
    datagram knows it, so an off-path attacker cannot forge the answer to it."""
    return hashlib.sha256(datagram).digest()[:NONCE_SIZE]


def encode_reset(token: bytes, reset_token: bytes) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.RESET, token, reset_token])


def session_header(kind: DatagramType, token: bytes, pn: int) -> bytes:
    """protocol.md 8.1: the associated data of a sealed session datagram."""
    return pack([PROTOCOL_VERSION, kind, token, pn])


def encode_session(kind: DatagramType, token: bytes, pn: int, sealed: bytes) -> bytes:
    return pack([PROTOCOL_VERSION, kind, token, pn, sealed])


def session_from_header(header: bytes, sealed: bytes) -> bytes:
    """The session datagram whose ``session_header`` is ``header``: the same bytes after
    the array's first byte (a fixarray of 4 becomes one of 5), then ``sealed`` as a bin.
    Saves packing the header twice for every datagram sent."""
    size = len(sealed)
    if size < 0x100:
        head = bytes((0xC4, size))
    elif size < 0x10000:
        head = b"\xc5" + size.to_bytes(2, "big")
    else:
        head = b"\xc6" + size.to_bytes(4, "big")
    return b"\x95" + header[1:] + head + sealed


def data_fields(ack: int, ack_bits: int, seq: int, more: bool, chunks: list[bytes]) -> bytes:
    """The plaintext of a DATA datagram: its fields after the packet number."""
    return pack([ack, ack_bits, seq, more, *chunks])


def ack_fields(ack: int, ack_bits: int) -> bytes:
    """The plaintext of an ACK or PING."""
    return pack([ack, ack_bits])


def path_fields(data: bytes) -> bytes:
    """The plaintext of a PATH_CHALLENGE or PATH_RESPONSE."""
    return pack([data])


def session_fields(datagram: SessionDatagram) -> tuple[DatagramType, bytes]:
    """The type and field plaintext of a session datagram (for tests and tools)."""
    d = datagram
    if isinstance(d, Data):
        return DatagramType.DATA, data_fields(d.ack, d.ack_bits, d.seq, d.more, list(d.chunks))
    if isinstance(d, Ack):
        return DatagramType.ACK, ack_fields(d.ack, d.ack_bits)
    if isinstance(d, Ping):
        return DatagramType.PING, ack_fields(d.ack, d.ack_bits)
    if isinstance(d, PathChallenge):
        return DatagramType.PATH_CHALLENGE, path_fields(d.data)
    return DatagramType.PATH_RESPONSE, path_fields(d.data)


def encode(datagram: Datagram) -> bytes:
    """Encode any datagram object (used by tests and tools; hot paths call encode_* directly)."""
    d = datagram
    if isinstance(d, Hello):
        return encode_hello(d.nonce)
    if isinstance(d, Challenge):
        return encode_challenge(d.nonce, d.cookie, d.relay_key, d.keyed)
    if isinstance(d, Join):
        return encode_join(d.nonce, d.cookie, d.handshake)
    if isinstance(d, Accept):
        return encode_accept(d.nonce, d.token, d.handshake)
    if isinstance(d, Reject):
        return encode_reject(d.nonce, d.code, d.reason)
    if isinstance(d, Reset):
        return encode_reset(d.token, d.reset_token)
    return encode_session(d.kind, d.token, d.pn, d.sealed)
