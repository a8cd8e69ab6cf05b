"""The room's ordered log: it numbers room events, keeps the recent ones, replays from a seq.

protocol.md 6.3: every room event (MESSAGE, ACTION_POSTED, JOINED, LEFT, NICK_CHANGED) gets
the next room-wide ``seq``, from 1, one number per event. The ``epoch`` names one incarnation
of the log: a client that resumes with the same epoch can be caught up from its last seq; a
new epoch means the numbers start afresh. The relay core uses only the ``RoomLog`` interface,
so a log kept elsewhere (a file, a cluster's shared store) can take ``MemoryRoomLog``'s place;
whatever keeps it, the number is assigned by the log as the event is appended, in one step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from udpchat import messages as m
from udpchat import wire
from udpchat.errors import UsageError

__all__ = ["CHAT_EVENTS", "EventBuilder", "LoggedEvent", "MemoryRoomLog", "RoomLog"]

# A room event, given the number the log assigns it.
EventBuilder = Callable[[int], m.RoomEvent]
# What a newcomer is shown of the history (protocol.md 6.3): the chat, not the comings and goings.
CHAT_EVENTS: frozenset[type[m.RoomEvent]] = frozenset({m.ChatMessage, m.ActionMessage})


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    chat: bool  # MESSAGE or ACTION_POSTED
    data: bytes  # the encoded event, as every member receives it


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

    def append(self, event: EventBuilder) -> LoggedEvent:
        """Number the event ``last_seq + 1``, keep it (within the retention), return it."""
        ...

    def replay(self, after: int) -> list[bytes]:
        """The kept events numbered above ``after``, oldest first (catch-up on resume)."""
        ...

    def recent_chats(self, count: int) -> list[bytes]:
        """The newest ``count`` kept chat events, oldest first (a newcomer's history)."""
        ...


class MemoryRoomLog:
    """The room log of one relay process: the newest ``history`` events, in memory.

    Its epoch is drawn from the injected random source when it is created, so a restarted
    relay (a new log) is a new epoch. ``history`` 0 keeps nothing but still numbers events.
    """

    __slots__ = ("_epoch", "_history", "_kept", "_last_seq")

    def __init__(self, history: int, rng: Callable[[int], bytes]) -> None:
        if history < 0:
            raise ValueError("history cannot be negative")
        self._epoch = rng(wire.EPOCH_SIZE)
        self._history = history
        self._kept: deque[LoggedEvent] = deque(maxlen=max(history, 1))
        self._last_seq = 0

    @property
    def epoch(self) -> bytes:
        return self._epoch

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def first_seq(self) -> int:
        return self._kept[0].seq if self._kept else self._last_seq + 1

    def append(self, event: EventBuilder) -> LoggedEvent:
        seq = self._last_seq + 1
        built = event(seq)
        if built.seq != seq:
            raise UsageError(f"an event built as number {built.seq}, not {seq}")
        self._last_seq = seq
        logged = LoggedEvent(built.seq, type(built) in CHAT_EVENTS, m.encode_message(built))
        if self._history:
            self._kept.append(logged)
        return logged

    def replay(self, after: int) -> list[bytes]:
        return [event.data for event in self._kept if event.seq > after]

    def recent_chats(self, count: int) -> list[bytes]:
        if not count:
            return []
        return [event.data for event in self._kept if event.chat][-count:]
