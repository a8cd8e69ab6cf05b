"""The room's ordered log: it numbers room events, keeps the recent ones, replays from a seq.

protocol.md 6.3: every room event (MESSAGE, ACTION_POSTED, JOINED, LEFT, NICK_CHANGED) gets
the next room-wide ``seq``, from 1, one number per event. The ``epoch`` names one incarnation
of the log: a client that resumes with the same epoch can be caught up from its last seq; a
new epoch means the numbers start afresh. The relay core uses only the ``RoomLog`` interface,
so a log kept elsewhere (a file, a cluster's shared store) can take ``MemoryRoomLog``'s place;
whatever keeps it, the number is assigned by the log as the event is appended, in one step.

A log that outlives the process (udpchat.stores) also keeps what a restarted relay needs to
carry on (protocol.md 6.6): each posted message's id, with its seq, so that a copy resent
after the restart is recognised; and each member's nickname and resume secret, so that the
member can resume its place. Changes are made durable by ``commit``, which the core calls
before any datagram leaves: nothing a member is sent can be forgotten by a crash.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Reversible
from dataclasses import dataclass
from typing import Protocol

from udpchat import messages as m
from udpchat import wire
from udpchat.errors import UsageError

__all__ = [
    "CHAT_EVENTS", "MIN_KEPT_IDS", "EventBuilder", "KeptMember", "LoggedEvent", "MemoryRoomLog",
    "RoomLog", "events_after", "newest_chats",
]

# A room event, given the number the log assigns it.
EventBuilder = Callable[[int], m.RoomEvent]
# What a newcomer is shown of the history (protocol.md 6.3): the chat, not the comings and goings.
# protocol.md 6.1: the message ids of posts a log keeps, at least (and as many as its history).
MIN_KEPT_IDS = 1024
CHAT_EVENTS: frozenset[type[m.RoomEvent]] = frozenset({m.ChatMessage, m.ActionMessage})


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    chat: bool  # MESSAGE or ACTION_POSTED
    data: bytes  # the encoded event, as every member receives it
    new: bool = True  # False: a post already in the log (its message id), returned again


def events_after(events: Reversible[LoggedEvent], after: int) -> list[bytes]:
    """The events of ``events`` (in seq order) numbered above ``after``, oldest first: a
    rejoining member's catch-up. Read from the newest end, so a member that missed a few
    events costs a few steps, not the whole history kept (a room rejoining at once)."""
    found: list[bytes] = []
    for event in reversed(events):
        if event.seq <= after:
            break
        found.append(event.data)
    found.reverse()
    return found


def newest_chats(events: Reversible[LoggedEvent], count: int) -> list[bytes]:
    """The newest ``count`` chat events of ``events`` (in seq order), oldest first: a
    newcomer's history. Read from the newest end, so a join in a talking room looks at
    about ``count`` events, not the whole history kept."""
    found: list[bytes] = []
    if count <= 0:
        return found
    for event in reversed(events):
        if event.chat:
            found.append(event.data)
            if len(found) == count:
                break
    found.reverse()
    return found


@dataclass(frozen=True, slots=True)
class KeptMember:
    """What a resume of a member's session must match after a restart (protocol.md 4.2)."""

    token: bytes
    nick: str
    resume_secret: bytes


class RoomLog(Protocol):
    @property
    def epoch(self) -> bytes:
        """This log's incarnation (wire.EPOCH_SIZE bytes): it changes when history is lost."""
        ...

    @property
    def last_seq(self) -> int:
        """The newest event's number; 0 before the first."""
        ...

    @property
    def first_seq(self) -> int:
        """The oldest number still kept; ``last_seq + 1`` when nothing is. Events from
        ``first_seq`` on can be replayed: a seq below it is no longer in the history."""
        ...

    def append(self, event: EventBuilder, msgid: bytes = b"") -> LoggedEvent:
        """Number the event ``last_seq + 1``, keep it (within the retention), return it;
        ``msgid`` is the client's id of the post it is (empty for other events)."""
        ...

    def replay(self, after: int) -> list[bytes]:
        """The kept events numbered above ``after``, oldest first (catch-up on resume)."""
        ...

    def recent_chats(self, count: int) -> list[bytes]:
        """The newest ``count`` kept chat events, oldest first (a newcomer's history)."""
        ...

    def posted_ids(self, count: int) -> list[tuple[bytes, int]]:
        """(msgid, seq) of the newest posts with an id, at most ``count``, oldest first."""
        ...

    def keep_member(self, member: KeptMember) -> None:
        """Remember a member (or its new nickname) until ``forget_member``."""
        ...

    def forget_member(self, token: bytes) -> None: ...

    def kept_members(self) -> list[KeptMember]:
        """The members remembered when the log was opened (and since)."""
        ...

    def commit(self) -> None:
        """Make every change so far durable; called before any datagram is sent."""
        ...

    def close(self) -> None:
        """Commit what is left and let go of the store (once the relay has stopped)."""
        ...


class MemoryRoomLog:
    """The room log of one relay process: the newest ``history`` events, in memory.

    Its epoch is drawn from the injected random source when it is created, so a restarted
    relay (a new log) is a new epoch. ``history`` 0 keeps nothing but still numbers events.
    """

    __slots__ = ("_chats", "_epoch", "_history", "_ids", "_kept", "_last_seq", "_members")

    def __init__(
        self, history: int, rng: Callable[[int], bytes], epoch: bytes | None = None
    ) -> None:
        """``epoch``: the epoch of a room restored from a store (none: a new room's, drawn
        from ``rng``)."""
        if history < 0:
            raise ValueError("history cannot be negative")
        self._epoch = epoch if epoch is not None else rng(wire.EPOCH_SIZE)
        self._history = history
        self._kept: deque[LoggedEvent] = deque(maxlen=max(history, 1))
        self._chats = 0  # how many of the kept events are chats: a quiet room's none
        self._last_seq = 0
        self._ids: deque[tuple[bytes, int]] = deque(maxlen=max(history, MIN_KEPT_IDS))
        self._members: dict[bytes, KeptMember] = {}

    @property
    def epoch(self) -> bytes:
        return self._epoch

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def first_seq(self) -> int:
        return self._kept[0].seq if self._kept else self._last_seq + 1

    def append(self, event: EventBuilder, msgid: bytes = b"") -> LoggedEvent:
        seq = self._last_seq + 1
        built = event(seq)
        if built.seq != seq:
            raise UsageError(f"an event built as number {built.seq}, not {seq}")
        self._last_seq = seq
        logged = LoggedEvent(built.seq, type(built) in CHAT_EVENTS, m.encode_message(built))
        if self._history:
            self._keep(logged)
        if msgid:
            self._ids.append((msgid, seq))
        return logged

    def _keep(self, logged: LoggedEvent) -> None:
        """Keep ``logged`` as the newest event, the oldest making room if the history is
        full, and count the chats kept: ``recent_chats`` reads back only as far as those."""
        kept = self._kept
        if len(kept) == kept.maxlen and kept[0].chat:
            self._chats -= 1
        kept.append(logged)
        self._chats += logged.chat

    def replay(self, after: int) -> list[bytes]:
        return events_after(self._kept, after)

    def recent_chats(self, count: int) -> list[bytes]:
        # no further back than the oldest chat wanted: in a room where people come and go
        # but nobody spoke, no event at all
        return newest_chats(self._kept, min(count, self._chats))

    def posted_ids(self, count: int) -> list[tuple[bytes, int]]:
        return list(self._ids)[-count:] if count else []

    def keep_member(self, member: KeptMember) -> None:
        self._members[member.token] = member

    def forget_member(self, token: bytes) -> None:
        self._members.pop(token, None)

    def kept_members(self) -> list[KeptMember]:
        return list(self._members.values())

    def commit(self) -> None:
        """Nothing to do: the memory log lives and dies with its process."""

    def close(self) -> None:
        """Nothing to let go of."""
