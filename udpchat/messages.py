"""Chat messages: what travels inside the reliable stream between a client and the relay.

The reliability layer delivers opaque byte strings in order and exactly once; each is one
msgpack array ``[kind, ...fields]`` described in protocol.md "Messages". Each kind is one
dataclass whose fields carry their wire type (udpchat.schema), from which its decoder and
encoder are compiled. Decoding validates everything and raises ``wire.DecodeError`` only,
exactly like datagram decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated

from udpchat.schema import Family
from udpchat.wire import MAX_NICK_BYTES, MAX_REASON_BYTES, MAX_UINT
from udpchat.wiretypes import Array, Bin, Bool, Str, UInt, fail, unpack

__all__ = [
    "ANSWERED_KINDS",
    "LEAVE_REASON_WORDS",
    "MAX_BATCH",
    "MAX_MEMBERS_LISTED",
    "MAX_MESSAGE_SIZE",
    "MAX_TEXT_BYTES",
    "MAX_TIME",
    "MESSAGES",
    "MSGID_SIZE",
    "Action",
    "ActionMessage",
    "ChatMessage",
    "ClientMessage",
    "Error",
    "Joined",
    "JoinedBatch",
    "K",
    "LeaveReason",
    "Left",
    "LeftBatch",
    "Members",
    "MembersPage",
    "Message",
    "MessageKind",
    "MsgId",
    "Nick",
    "NickChanged",
    "NickRequest",
    "Nicks",
    "Posted",
    "Private",
    "PrivateSend",
    "Quit",
    "Reason",
    "Refused",
    "RelayMessage",
    "RoomEvent",
    "Say",
    "Seq",
    "Shutdown",
    "Text",
    "Time",
    "Welcome",
    "Who",
    "WhoPage",
    "decode_message",
    "encode_message",
    "leave_reason_words",
    "peek_kind",
    "text_error",
]

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
    WHO_PAGE = 7
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
    JOINED_BATCH = 28
    LEFT_BATCH = 29
    MEMBERS_PAGE = 30


class LeaveReason(IntEnum):
    QUIT = 0
    TIMEOUT = 1
    DROPPED = 2
    REPLACED = 3


LEAVE_REASON_WORDS: dict[int, str] = {
    LeaveReason.QUIT: "quit",
    LeaveReason.TIMEOUT: "timed out",
    LeaveReason.DROPPED: "dropped",
    LeaveReason.REPLACED: "replaced",
}
"""How a LEFT's reason code reads in a notice (the relay's log and the clients' events)."""


def leave_reason_words(reason: int) -> str:
    """The words for a LEFT's reason code; a code from a newer relay reads "left"."""
    return LEAVE_REASON_WORDS.get(reason, "left")


# The field types of protocol.md 6, by meaning.
Text = Annotated[str, Str(MAX_TEXT_BYTES)]
Nick = Annotated[str, Str(MAX_NICK_BYTES)]
Reason = Annotated[str, Str(MAX_REASON_BYTES)]
Seq = Annotated[int, UInt(MAX_UINT)]
Time = Annotated[int, UInt(MAX_TIME)]
MsgId = Annotated[bytes, Bin(MSGID_SIZE, or_empty=True)]  # MSGID_SIZE random bytes, or none
Nicks = Annotated[tuple[str, ...], Array(Str(MAX_NICK_BYTES), MAX_MEMBERS_LISTED)]
# protocol.md 6.3: a batch of join or leave notices holds at most this many members.
MAX_BATCH = 256
BatchNicks = Annotated[tuple[str, ...], Array(Str(MAX_NICK_BYTES), MAX_BATCH)]

MESSAGES: Family[Message] = Family("message")
K = MessageKind


# --- client -> relay ------------------------------------------------------------------------


@MESSAGES.register(K.SAY)
@dataclass(frozen=True, slots=True)
class Say:
    text: Text
    msgid: MsgId = b""


@MESSAGES.register(K.ACTION)
@dataclass(frozen=True, slots=True)
class Action:
    text: Text
    msgid: MsgId = b""


@MESSAGES.register(K.PRIVATE_SEND)
@dataclass(frozen=True, slots=True)
class PrivateSend:
    to: Nick
    text: Text
    msgid: MsgId = b""


@MESSAGES.register(K.NICK)
@dataclass(frozen=True, slots=True)
class NickRequest:
    nick: Nick


@MESSAGES.register(K.WHO)
@dataclass(frozen=True, slots=True)
class Who:
    pass


@MESSAGES.register(K.WHO_PAGE)
@dataclass(frozen=True, slots=True)
class WhoPage:
    """The members listed after ``after`` (protocol.md 6.7); "" asks for the first page."""

    after: Nick


@MESSAGES.register(K.QUIT)
@dataclass(frozen=True, slots=True)
class Quit:
    reason: Reason


# --- relay -> client ------------------------------------------------------------------------


@MESSAGES.register(K.WELCOME)
@dataclass(frozen=True, slots=True)
class Welcome:
    nick: Nick
    members: Nicks
    seq: Seq  # the room sequence number of the newest event at join time
    first_seq: Seq  # the oldest room sequence number the relay still holds in its history
    resumed: Seq  # messages the relay had received on the session this one replaces
    # protocol.md 6.7: how many are in the room as of ``seq``, the newcomer included; more
    # than ``members`` names when the room is paged (or too large for one message)
    total: Seq


@MESSAGES.register(K.MESSAGE)
@dataclass(frozen=True, slots=True)
class ChatMessage:
    seq: Seq
    time: Time
    nick: Nick
    text: Text


@MESSAGES.register(K.ACTION_POSTED)
@dataclass(frozen=True, slots=True)
class ActionMessage:
    seq: Seq
    time: Time
    nick: Nick
    text: Text


@MESSAGES.register(K.JOINED)
@dataclass(frozen=True, slots=True)
class Joined:
    seq: Seq
    time: Time
    nick: Nick


@MESSAGES.register(K.LEFT)
@dataclass(frozen=True, slots=True)
class Left:
    seq: Seq
    time: Time
    nick: Nick
    reason: Annotated[int, UInt(255)]  # a LeaveReason
    text: Reason


@MESSAGES.register(K.JOINED_BATCH)
@dataclass(frozen=True, slots=True)
class JoinedBatch:
    """Members who joined within one batch window (protocol.md 6.3): ``joined`` are new,
    ``returned`` came back with a resume of an earlier relay incarnation."""

    seq: Seq
    time: Time
    joined: BatchNicks
    returned: BatchNicks

    def __post_init__(self) -> None:
        if not self.joined and not self.returned:
            fail("a JOINED_BATCH names at least one member")
        if len(self.joined) + len(self.returned) > MAX_BATCH:
            fail(f"a JOINED_BATCH names at most {MAX_BATCH} members")


@MESSAGES.register(K.LEFT_BATCH)
@dataclass(frozen=True, slots=True)
class LeftBatch:
    """Members who left within one batch window; the three arrays are parallel."""

    seq: Seq
    time: Time
    nicks: BatchNicks
    reasons: Annotated[tuple[int, ...], Array(UInt(255), MAX_BATCH)]  # LeaveReason codes
    texts: Annotated[tuple[str, ...], Array(Str(MAX_REASON_BYTES), MAX_BATCH)]

    def __post_init__(self) -> None:
        if not self.nicks:
            fail("a LEFT_BATCH names at least one member")
        if not len(self.nicks) == len(self.reasons) == len(self.texts):
            fail("a LEFT_BATCH's nicks, reasons and texts have one item per member")


@MESSAGES.register(K.NICK_CHANGED)
@dataclass(frozen=True, slots=True)
class NickChanged:
    seq: Seq
    time: Time
    old: Nick
    new: Nick


@MESSAGES.register(K.POSTED)
@dataclass(frozen=True, slots=True)
class Posted:
    seq: Seq


@MESSAGES.register(K.REFUSED)
@dataclass(frozen=True, slots=True)
class Refused:
    text: Reason


@MESSAGES.register(K.PRIVATE)
@dataclass(frozen=True, slots=True)
class Private:
    time: Time
    sender: Annotated[str, Str(MAX_NICK_BYTES, label="from")]
    to: Nick
    text: Text


@MESSAGES.register(K.MEMBERS)
@dataclass(frozen=True, slots=True)
class Members:
    members: Nicks


@MESSAGES.register(K.MEMBERS_PAGE)
@dataclass(frozen=True, slots=True)
class MembersPage:
    """A page of the member list (protocol.md 6.7): the members sorted after ``after``,
    whether ``more`` follow, and how many are in the room."""

    total: Seq
    after: Nick
    members: Nicks
    more: Annotated[bool, Bool()]


@MESSAGES.register(K.ERROR)
@dataclass(frozen=True, slots=True)
class Error:
    text: Reason


@MESSAGES.register(K.SHUTDOWN)
@dataclass(frozen=True, slots=True)
class Shutdown:
    text: Reason


RoomEvent = ChatMessage | ActionMessage | Joined | Left | NickChanged | JoinedBatch | LeftBatch
ClientMessage = Say | Action | PrivateSend | NickRequest | Who | WhoPage | Quit
RelayMessage = (
    Welcome | RoomEvent | Posted | Refused | Private | Members | MembersPage | Error | Shutdown
)
Message = ClientMessage | RelayMessage

_DECODE = {kind: schema.decode for kind, schema in MESSAGES.by_tag.items()}


def encode_message(message: Message) -> bytes:
    """Encode a message for the reliable stream."""
    return MESSAGES.encode(message)


def decode_message(data: bytes) -> Message:
    """Decode one reassembled message; raise ``DecodeError`` for anything invalid."""
    value = unpack(data, MAX_MESSAGE_SIZE)
    if type(value) is not list or not value:
        fail("a message is a non-empty array")
    kind = value[0]
    if type(kind) is not int:  # not a bool either: True would pass for 1 in a dict
        fail("message kind must be an unsigned integer up to 255")
    try:
        decode = _DECODE[kind]
    except KeyError:
        fail(f"unknown message kind {kind}")
    return decode(value)


# Requests that get exactly one answer (protocol.md 6.1), whatever is wrong with them.
ANSWERED_KINDS = frozenset(
    {
        MessageKind.SAY,
        MessageKind.ACTION,
        MessageKind.PRIVATE_SEND,
        MessageKind.NICK,
        MessageKind.WHO,
        MessageKind.WHO_PAGE,
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
