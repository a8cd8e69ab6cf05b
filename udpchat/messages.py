"""Chat messages: what travels inside the reliable stream between a client and the relay.

The reliability layer delivers opaque byte strings in order and exactly once; each is one
msgpack array ``[kind, ...fields]`` described in protocol.md "Messages". Decoding validates
everything and raises ``wire.DecodeError`` only, exactly like datagram decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from udpchat.wire import (
    MAX_NICK_BYTES,
    MAX_REASON_BYTES,
    DecodeError,
    as_bin,
    as_str,
    as_uint,
    check_arity,
    fail,
    pack,
    unpack,
)

# protocol.md "Size limits": chat text, in UTF-8 bytes, and whole messages after reassembly.
MAX_TEXT_BYTES = 16 * 1024
MAX_MESSAGE_SIZE = 64 * 1024
MAX_MEMBERS_LISTED = 1024
MAX_TIME = (1 << 32) - 1
# protocol.md 6.1: a client-chosen id that makes a resent SAY, ACTION or PRIVATE_SEND
# recognisable, so that it is answered again but posted only once.
MSGID_SIZE = 8


class MessageKind(IntEnum):
    # client -> relay
    SAY = 1
    ACTION = 2
    PRIVATE_SEND = 3
    NICK = 4
    WHO = 5
    QUIT = 6
    # relay -> client
    WELCOME = 16
    MESSAGE = 17
    ACTION_POSTED = 18
    JOINED = 19
    LEFT = 20
    NICK_CHANGED = 21
    POSTED = 22
    REFUSED = 23
    PRIVATE = 24
    MEMBERS = 25
    ERROR = 26
    SHUTDOWN = 27


class LeaveReason(IntEnum):
    QUIT = 0
    TIMEOUT = 1
    DROPPED = 2
    REPLACED = 3


# --- client -> relay ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    msgid: bytes = b""  # MSGID_SIZE random bytes, or empty for none


@dataclass(frozen=True, slots=True)
class Action:
    text: str
    msgid: bytes = b""


@dataclass(frozen=True, slots=True)
class PrivateSend:
    to: str
    text: str
    msgid: bytes = b""


@dataclass(frozen=True, slots=True)
class NickRequest:
    nick: str


@dataclass(frozen=True, slots=True)
class Who:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    reason: str


# --- relay -> client ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    nick: str
    members: tuple[str, ...]
    seq: int  # the room sequence number of the newest event at join time
    first_seq: int  # the oldest room sequence number the relay still holds in its history
    resumed: int  # messages the relay had received on the session this one replaces


@dataclass(frozen=True, slots=True)
class ChatMessage:
    seq: int
    time: int
    nick: str
    text: str


@dataclass(frozen=True, slots=True)
class ActionMessage:
    seq: int
    time: int
    nick: str
    text: str


@dataclass(frozen=True, slots=True)
class Joined:
    seq: int
    time: int
    nick: str


@dataclass(frozen=True, slots=True)
class Left:
    seq: int
    time: int
    nick: str
    reason: int
    text: str


@dataclass(frozen=True, slots=True)
class NickChanged:
    seq: int
    time: int
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Posted:
    seq: int


@dataclass(frozen=True, slots=True)
class Refused:
    text: str


@dataclass(frozen=True, slots=True)
class Private:
    time: int
    sender: str
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class Members:
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Error:
    text: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    text: str


RoomEvent = ChatMessage | ActionMessage | Joined | Left | NickChanged
ClientMessage = Say | Action | PrivateSend | NickRequest | Who | Quit
RelayMessage = Welcome | RoomEvent | Posted | Refused | Private | Members | Error | Shutdown
Message = ClientMessage | RelayMessage

_KIND_OF: dict[type[Any], MessageKind] = {
    Say: MessageKind.SAY,
    Action: MessageKind.ACTION,
    PrivateSend: MessageKind.PRIVATE_SEND,
    NickRequest: MessageKind.NICK,
    Who: MessageKind.WHO,
    Quit: MessageKind.QUIT,
    Welcome: MessageKind.WELCOME,
    ChatMessage: MessageKind.MESSAGE,
    ActionMessage: MessageKind.ACTION_POSTED,
    Joined: MessageKind.JOINED,
    Left: MessageKind.LEFT,
    NickChanged: MessageKind.NICK_CHANGED,
    Posted: MessageKind.POSTED,
    Refused: MessageKind.REFUSED,
    Private: MessageKind.PRIVATE,
    Members: MessageKind.MEMBERS,
    Error: MessageKind.ERROR,
    Shutdown: MessageKind.SHUTDOWN,
}


def encode_message(message: Message) -> bytes:
    """Encode a message for the reliable stream."""
    fields: list[Any] = [_KIND_OF[type(message)]]
    for name in message.__slots__:  # dataclass(slots=True): the fields, in order
        value = getattr(message, name)
        fields.append(list(value) if type(value) is tuple else value)
    return pack(fields)


# --- decoding -------------------------------------------------------------------------------


def _text(v: Any, name: str = "text") -> str:
    return as_str(v, name, MAX_TEXT_BYTES)


def _nick(v: Any, name: str = "nick") -> str:
    return as_str(v, name, MAX_NICK_BYTES)


def _reason(v: Any) -> str:
    return as_str(v, "reason", MAX_REASON_BYTES)


def _time(v: Any) -> int:
    return as_uint(v, "time", MAX_TIME)


def _seq(v: Any) -> int:
    return as_uint(v, "seq")


def _msgid(v: Any) -> bytes:
    msgid = as_bin(v, "msgid", None, MSGID_SIZE)
    if len(msgid) not in (0, MSGID_SIZE):
        fail(f"msgid must be empty or {MSGID_SIZE} bytes")
    return msgid


def _nicks(v: Any) -> tuple[str, ...]:
    if type(v) is not list or len(v) > MAX_MEMBERS_LISTED:
        fail(f"members must be an array of at most {MAX_MEMBERS_LISTED} nicknames")
    return tuple(_nick(n) for n in v)


def _decode(kind: MessageKind, f: list[Any]) -> Message:
    K = MessageKind
    if kind is K.SAY:
        check_arity(f, 2, "SAY")
        return Say(_text(f[0]), _msgid(f[1]))
    if kind is K.ACTION:
        check_arity(f, 2, "ACTION")
        return Action(_text(f[0]), _msgid(f[1]))
    if kind is K.PRIVATE_SEND:
        check_arity(f, 3, "PRIVATE_SEND")
        return PrivateSend(_nick(f[0], "to"), _text(f[1]), _msgid(f[2]))
    if kind is K.NICK:
        check_arity(f, 1, "NICK")
        return NickRequest(_nick(f[0]))
    if kind is K.WHO:
        check_arity(f, 0, "WHO")
        return Who()
    if kind is K.QUIT:
        check_arity(f, 1, "QUIT")
        return Quit(_reason(f[0]))
    if kind is K.WELCOME:
        check_arity(f, 5, "WELCOME")
        return Welcome(_nick(f[0]), _nicks(f[1]), _seq(f[2]), _seq(f[3]), _seq(f[4]))
    if kind is K.MESSAGE:
        check_arity(f, 4, "MESSAGE")
        return ChatMessage(_seq(f[0]), _time(f[1]), _nick(f[2]), _text(f[3]))
    if kind is K.ACTION_POSTED:
        check_arity(f, 4, "ACTION_POSTED")
        return ActionMessage(_seq(f[0]), _time(f[1]), _nick(f[2]), _text(f[3]))
    if kind is K.JOINED:
        check_arity(f, 3, "JOINED")
        return Joined(_seq(f[0]), _time(f[1]), _nick(f[2]))
    if kind is K.LEFT:
        check_arity(f, 5, "LEFT")
        return Left(
            _seq(f[0]), _time(f[1]), _nick(f[2]), as_uint(f[3], "reason", 255), _reason(f[4])
        )
    if kind is K.NICK_CHANGED:
        check_arity(f, 4, "NICK_CHANGED")
        return NickChanged(_seq(f[0]), _time(f[1]), _nick(f[2], "old"), _nick(f[3], "new"))
    if kind is K.POSTED:
        check_arity(f, 1, "POSTED")
        return Posted(_seq(f[0]))
    if kind is K.REFUSED:
        check_arity(f, 1, "REFUSED")
        return Refused(_reason(f[0]))
    if kind is K.PRIVATE:
        check_arity(f, 4, "PRIVATE")
        return Private(_time(f[0]), _nick(f[1], "from"), _nick(f[2], "to"), _text(f[3]))
    if kind is K.MEMBERS:
        check_arity(f, 1, "MEMBERS")
        return Members(_nicks(f[0]))
    if kind is K.ERROR:
        check_arity(f, 1, "ERROR")
        return Error(_reason(f[0]))
    check_arity(f, 1, "SHUTDOWN")
    return Shutdown(_reason(f[0]))


def decode_message(data: bytes) -> Message:
    """Decode one reassembled message; raise ``DecodeError`` for anything invalid."""
    value = unpack(data, MAX_MESSAGE_SIZE)
    if type(value) is not list or not value:
        fail("a message is a non-empty array")
    raw = as_uint(value[0], "message kind", 255)
    try:
        kind = MessageKind(raw)
    except ValueError:
        raise DecodeError(f"unknown message kind {raw}") from None
    return _decode(kind, value[1:])


# Requests that get exactly one answer (protocol.md 6.1), whatever is wrong with them.
ANSWERED_KINDS = frozenset(
    {
        MessageKind.SAY,
        MessageKind.ACTION,
        MessageKind.PRIVATE_SEND,
        MessageKind.NICK,
        MessageKind.WHO,
    }
)


def peek_kind(data: bytes) -> int | None:
    """The kind of a message that may not decode (too long, truncated, bad fields), read
    from its first bytes, so that the relay can still answer a request it cannot serve.

    None unless ``data`` starts like a non-empty msgpack array whose first element is an
    unsigned integer below 256.
    """
    if not data:
        return None
    head = data[0]
    if 0x91 <= head <= 0x9F:
        at = 1
    elif head == 0xDC and len(data) >= 3 and int.from_bytes(data[1:3], "big"):
        at = 3
    elif head == 0xDD and len(data) >= 5 and int.from_bytes(data[1:5], "big"):
        at = 5
    else:
        return None
    if len(data) <= at:
        return None
    first = data[at]
    if first <= 0x7F:
        return first
    if first == 0xCC and len(data) > at + 1:
        return data[at + 1]
    return None


def text_error(text: str) -> str | None:
    """A one-line reason why ``text`` cannot be sent as chat, or None."""
    if not text:
        return "empty message"
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEXT_BYTES:
        return f"message is {size} bytes; the limit is {MAX_TEXT_BYTES} bytes of UTF-8"
    return None
