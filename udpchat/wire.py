"""The datagram format: one msgpack array per UDP datagram, validated field by field.

protocol.md is the contract; this module is its executable form. Every datagram is
``[version, type, ...fields]``. ``decode_datagram`` is the only door through which bytes from
the network enter the program: it checks every type, range and length and raises
``DecodeError`` and nothing else, so callers can count and drop garbage with a single
``except``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NoReturn

import msgpack

PROTOCOL_VERSION = 1
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
MAX_COOKIE_SIZE = 64
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
    SEALED = 15


class RejectCode(IntEnum):
    NICK_TAKEN = 1
    NICK_INVALID = 2
    RELAY_FULL = 3
    VERSION = 4
    BAD_KEY = 5
    TOO_MANY_ATTEMPTS = 6
    SHUTTING_DOWN = 7


class DecodeError(ValueError):
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


@dataclass(frozen=True, slots=True)
class Resume:
    """What a rejoining client remembers of its previous session."""

    epoch: bytes
    token: bytes
    last_seq: int


@dataclass(frozen=True, slots=True)
class Join:
    nonce: bytes
    cookie: bytes
    nick: str
    resume: Resume | None


@dataclass(frozen=True, slots=True)
class Accept:
    nonce: bytes
    token: bytes
    epoch: bytes
    heartbeat_ms: int
    timeout_ms: int


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


Datagram = (
    Hello
    | Challenge
    | Join
    | Accept
    | Reject
    | Data
    | Ack
    | Ping
    | Reset
    | PathChallenge
    | PathResponse
)
SessionDatagram = Data | Ack | Ping | PathChallenge | PathResponse

# Bytes a DATA datagram needs besides its chunks (each chunk costs its length plus a 2 to
# 5 byte bin header), at worst: array header (3), version, type, token (10), pn, ack, seq
# (9 each), ack_bits (9) and more (1).
DATA_OVERHEAD = 3 + 1 + 1 + 10 + 9 + 9 + 9 + 9 + 1


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
    check_arity(value, 3, "resume")
    return Resume(
        epoch=as_bin(value[0], "resume epoch", EPOCH_SIZE),
        token=as_bin(value[1], "resume token", TOKEN_SIZE),
        last_seq=as_uint(value[2], "resume last_seq"),
    )


def _decode_fields(kind: DatagramType, f: list[Any]) -> Datagram:
    if kind is DatagramType.HELLO:
        check_arity(f, 2, "HELLO")
        as_bin(f[1], "padding")
        return Hello(as_bin(f[0], "nonce", NONCE_SIZE))
    if kind is DatagramType.CHALLENGE:
        check_arity(f, 2, "CHALLENGE")
        return Challenge(
            as_bin(f[0], "nonce", NONCE_SIZE), as_bin(f[1], "cookie", None, MAX_COOKIE_SIZE)
        )
    if kind is DatagramType.JOIN:
        check_arity(f, 5, "JOIN")
        as_bin(f[4], "padding")
        return Join(
            nonce=as_bin(f[0], "nonce", NONCE_SIZE),
            cookie=as_bin(f[1], "cookie", None, MAX_COOKIE_SIZE),
            nick=as_str(f[2], "nick", MAX_NICK_BYTES),
            resume=_decode_resume(f[3]),
        )
    if kind is DatagramType.ACCEPT:
        check_arity(f, 5, "ACCEPT")
        return Accept(
            nonce=as_bin(f[0], "nonce", NONCE_SIZE),
            token=as_bin(f[1], "token", TOKEN_SIZE),
            epoch=as_bin(f[2], "epoch", EPOCH_SIZE),
            heartbeat_ms=as_uint(f[3], "heartbeat_ms", 3_600_000),
            timeout_ms=as_uint(f[4], "timeout_ms", 3_600_000),
        )
    if kind is DatagramType.REJECT:
        check_arity(f, 3, "REJECT")
        nonce = as_bin(f[0], "nonce")
        if len(nonce) not in (0, NONCE_SIZE):
            fail("REJECT nonce must be empty or 8 bytes")
        return Reject(nonce, as_uint(f[1], "code", 255), as_str(f[2], "reason", MAX_REASON_BYTES))
    if kind is DatagramType.RESET:
        check_arity(f, 1, "RESET")
        return Reset(as_bin(f[0], "token", TOKEN_SIZE))
    # Session datagrams: token and packet number first.
    if len(f) < 2:
        fail(f"{kind.name} is too short")
    token = as_bin(f[0], "token", TOKEN_SIZE)
    pn = as_uint(f[1], "pn")
    if kind in (DatagramType.PATH_CHALLENGE, DatagramType.PATH_RESPONSE):
        check_arity(f, 3, kind.name)
        data = as_bin(f[2], "path data", PATH_DATA_SIZE)
        if kind is DatagramType.PATH_CHALLENGE:
            return PathChallenge(token, pn, data)
        return PathResponse(token, pn, data)
    if len(f) < 4:
        fail(f"{kind.name} is too short")
    ack = as_uint(f[2], "ack")
    ack_bits = as_uint(f[3], "ack_bits", MAX_ACK_BITS)
    if kind is DatagramType.ACK:
        check_arity(f, 4, "ACK")
        return Ack(token, pn, ack, ack_bits)
    if kind is DatagramType.PING:
        check_arity(f, 4, "PING")
        return Ping(token, pn, ack, ack_bits)
    # DATA
    if len(f) < 7:
        fail("DATA needs a sequence number, a more flag and at least one chunk")
    if len(f) - 6 > MAX_CHUNKS:
        fail(f"DATA has {len(f) - 6} chunks, more than {MAX_CHUNKS}")
    seq = as_uint(f[4], "seq")
    more = as_bool(f[5], "more")
    chunks = tuple(f[6:])
    for chunk in chunks:
        # A chunk is a whole message or a piece of one, never empty (protocol.md 5.1).
        if type(chunk) is not bytes or not chunk:
            fail("every chunk must be a non-empty bin")
    return Data(token, pn, ack, ack_bits, seq, more, chunks)


def decode_datagram(data: bytes) -> Datagram:
    """Decode and validate one datagram; raise ``DecodeError`` for anything else."""
    value = unpack(data)
    if type(value) is not list or len(value) < 2:
        fail("a datagram is an array of at least version and type")
    version = value[0]
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise UnsupportedVersion(version if type(version) is int else -1)
    raw_type = as_uint(value[1], "type", 255)
    try:
        kind = DatagramType(raw_type)
    except ValueError:
        fail(f"unknown datagram type {raw_type}")
    if kind is DatagramType.SEALED:
        fail("SEALED datagram received without a room key")
    return _decode_fields(kind, value[2:])


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
    """HELLO, padded to ``size`` (less than MIN_INITIAL_SIZE only when it will be sealed)."""
    return _padded([PROTOCOL_VERSION, DatagramType.HELLO, nonce], size)


def encode_challenge(nonce: bytes, cookie: bytes) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.CHALLENGE, nonce, cookie])


def encode_join(
    nonce: bytes, cookie: bytes, nick: str, resume: Resume | None, size: int = MIN_INITIAL_SIZE
) -> bytes:
    r = None if resume is None else [resume.epoch, resume.token, resume.last_seq]
    return _padded([PROTOCOL_VERSION, DatagramType.JOIN, nonce, cookie, nick, r], size)


def encode_accept(accept: Accept) -> bytes:
    return pack(
        [
            PROTOCOL_VERSION,
            DatagramType.ACCEPT,
            accept.nonce,
            accept.token,
            accept.epoch,
            accept.heartbeat_ms,
            accept.timeout_ms,
        ]
    )


def encode_reject(nonce: bytes, code: int, reason: str) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.REJECT, nonce, int(code), reason])


def encode_data(
    token: bytes, pn: int, ack: int, ack_bits: int, seq: int, more: bool, chunks: list[bytes]
) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.DATA, token, pn, ack, ack_bits, seq, more, *chunks])


def encode_ack(token: bytes, pn: int, ack: int, ack_bits: int) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.ACK, token, pn, ack, ack_bits])


def encode_ping(token: bytes, pn: int, ack: int, ack_bits: int) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.PING, token, pn, ack, ack_bits])


def encode_reset(token: bytes) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.RESET, token])


def encode_path_challenge(token: bytes, pn: int, data: bytes) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.PATH_CHALLENGE, token, pn, data])


def encode_path_response(token: bytes, pn: int, data: bytes) -> bytes:
    return pack([PROTOCOL_VERSION, DatagramType.PATH_RESPONSE, token, pn, data])


def encode(datagram: Datagram) -> bytes:
    """Encode any datagram object (used by tests and tools; hot paths call encode_* directly)."""
    d = datagram
    if isinstance(d, Hello):
        return encode_hello(d.nonce)
    if isinstance(d, Challenge):
        return encode_challenge(d.nonce, d.cookie)
    if isinstance(d, Join):
        return encode_join(d.nonce, d.cookie, d.nick, d.resume)
    if isinstance(d, Accept):
        return encode_accept(d)
    if isinstance(d, Reject):
        return encode_reject(d.nonce, d.code, d.reason)
    if isinstance(d, Data):
        return encode_data(d.token, d.pn, d.ack, d.ack_bits, d.seq, d.more, list(d.chunks))
    if isinstance(d, Ack):
        return encode_ack(d.token, d.pn, d.ack, d.ack_bits)
    if isinstance(d, Ping):
        return encode_ping(d.token, d.pn, d.ack, d.ack_bits)
    if isinstance(d, Reset):
        return encode_reset(d.token)
    if isinstance(d, PathChallenge):
        return encode_path_challenge(d.token, d.pn, d.data)
    return encode_path_response(d.token, d.pn, d.data)
