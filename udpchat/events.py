"""What a client session tells its user, as immutable values in the past tense.

The client core emits these; the terminal UI, the ``--json`` printer, the demo bots and the
tests consume them. Text fields hold what the relay sent, unsanitised: whoever displays them
must pass them through ``udpchat.sanitize``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ClientEvent", "Closed", "ConnectionLost", "ErrorReported", "HistoryGap", "JoinRejected",
    "MemberJoined", "MemberLeft", "MemberRenamed", "MembersChanged", "MembersJoined",
    "MembersLeft", "MembersListed", "MessagePending", "MessageReceived", "MessageRefused",
    "PrivateReceived", "Reconnecting", "RelayMoved", "Welcomed",
]


@dataclass(frozen=True, slots=True)
class Welcomed:
    """The relay accepted us (again): our nickname, who is in the room and how many."""

    nick: str
    members: tuple[str, ...]  # in a large room, the first page of them (protocol.md 6.7)
    resumed: bool  # a rejoin that kept our place in the room
    # A rejoin into a new incarnation of the room (a new epoch: a relay restarted without
    # its store, or a shared store that lost the room): the history before it is gone.
    history_lost: bool = False
    size: int = 0  # how many are in the room; never fewer than ``members`` names
    # The room's newest event (its seq) at the welcome: catch-up history ends with the
    # event of this number when it reaches it (a resume always does; a newcomer's chat
    # history when the room's last event was a chat message). 0: not known.
    head: int = 0

    def __post_init__(self) -> None:
        if self.size < len(self.members):
            object.__setattr__(self, "size", len(self.members))


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A room message, from someone else or (``own``) ours as the relay posted it."""

    seq: int
    time: float
    nick: str
    text: str
    action: bool = False
    own: bool = False
    history: bool = False
    local_id: int | None = None  # for ``own`` messages: the id ``say`` returned


@dataclass(frozen=True, slots=True)
class MessagePending:
    """We sent a message; the relay has not confirmed it yet."""

    local_id: int
    text: str
    action: bool = False


@dataclass(frozen=True, slots=True)
class MessageRefused:
    """The relay refused one of our messages (flood control, size); it was not delivered."""

    local_id: int
    text: str
    reason: str


@dataclass(frozen=True, slots=True)
class PrivateReceived:
    """A private message to us, or the relay's copy of one we sent (``sender`` is us)."""

    time: float
    sender: str
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class MemberJoined:
    seq: int
    time: float
    nick: str
    history: bool = False


@dataclass(frozen=True, slots=True)
class MemberLeft:
    seq: int
    time: float
    nick: str
    reason: str  # messages.LEAVE_REASON_WORDS: "quit", "timed out", "dropped", "replaced"
    text: str = ""  # the quit message
    history: bool = False


@dataclass(frozen=True, slots=True)
class MembersJoined:
    """Members who joined within one batch window, as one room event (never us):
    ``returned`` came back after the relay restarted, ``nicks`` are new."""

    seq: int
    time: float
    nicks: tuple[str, ...]
    returned: tuple[str, ...] = ()
    history: bool = False


@dataclass(frozen=True, slots=True)
class MembersLeft:
    """Members who left within one batch window, as one room event; ``reasons`` and
    ``texts`` are parallel to ``nicks`` (as in ``MemberLeft``)."""

    seq: int
    time: float
    nicks: tuple[str, ...]
    reasons: tuple[str, ...]
    texts: tuple[str, ...]
    history: bool = False


@dataclass(frozen=True, slots=True)
class MemberRenamed:
    """A member (or we, ``own``) took another nickname."""

    seq: int
    time: float
    old: str
    new: str
    own: bool = False
    history: bool = False


@dataclass(frozen=True, slots=True)
class MembersChanged:
    """Who left and who joined while we were away, when the rejoin's catch-up cannot tell
    (the room started afresh, its history lost): the difference between the member list we
    held and the one WELCOME gave, which is the exact list from then on."""

    left: tuple[str, ...]
    joined: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MembersListed:
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HistoryGap:
    """Room events we missed that the relay no longer holds."""

    first_missing: int
    last_missing: int


@dataclass(frozen=True, slots=True)
class ErrorReported:
    """A one-line error for the user: from the relay, or a bad command caught locally.

    ``request`` is the id that ``private``, ``change_nick`` or ``who`` returned when the
    error is the relay's answer to that request; None for errors about nothing the user
    asked (a rejoin under another nickname, a notice from the relay)."""

    text: str
    request: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The relay went silent, restarted or shut down; we will try to rejoin.

    ``silent_for``: seconds since the relay was last heard, when the loss was noticed (a
    silence is noticed only after seconds of it); a measurement, left out of equality."""

    reason: str
    silent_for: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class Reconnecting:
    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class RelayMoved:
    """The relay went silent (or did not answer, or shut down): the session moves to the
    next relay of the list, ``to``, and resumes its place there after ``delay`` seconds
    (attempt ``attempt`` since the last welcome). Takes the place of ``ConnectionLost``
    and ``Reconnecting`` when the client has other relays (protocol.md 6.9)."""

    relay: str  # HOST:PORT of the relay left
    to: str  # HOST:PORT of the relay tried next
    reason: str
    attempt: int
    delay: float
    silent_for: float = field(default=0.0, compare=False)  # as in ConnectionLost


@dataclass(frozen=True, slots=True)
class JoinRejected:
    """The relay refused to let us in (final: the session is closed)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over; nothing more will happen."""

    reason: str


ClientEvent = (
    Welcomed
    | MessageReceived
    | MessagePending
    | MessageRefused
    | PrivateReceived
    | MemberJoined
    | MemberLeft
    | MembersJoined
    | MembersLeft
    | MemberRenamed
    | MembersListed
    | MembersChanged
    | HistoryGap
    | ErrorReported
    | ConnectionLost
    | Reconnecting
    | RelayMoved
    | JoinRejected
    | Closed
)
