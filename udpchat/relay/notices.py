"""Join and leave notices waiting to share one room event (protocol.md 6.3).

A join or a leave does not become a room event at once: it waits, with the others of its
kind, until the batch window ends, the batch is full (``notice_batch`` members, or about one
datagram of names), or anything else must enter the room log. Then the whole batch is one
JOINED_BATCH or LEFT_BATCH with one ``seq``, fanned out once per member instead of once per
join. The room owns the flushing; this module only holds what waits.

Invariants, which keep every member's list exact without cancelling anything:

* at most one kind waits: a join arriving while leaves wait (or the reverse) flushes them
  first, so the log shows comings and goings in the order they happened;
* every other room event (a message, a nick change) is logged after the waiting batch, so
  nobody hears from a member before hearing that it joined;
* nothing waiting is ever taken back: a member who joins and leaves within one window is
  announced joined, then left (both batches go to everyone, newcomers included, and
  applying a join of a member already listed, or a leave of one not listed, changes
  nothing). One exception, in a room several relays share (protocol.md 6.8): the join
  of a member that moved to another relay before it was announced is taken out here and
  announced by that relay, so that it can never come after what the member does there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from udpchat import messages as m
from udpchat.relay.room_log import EventBuilder

__all__ = ["ENTRY_OVERHEAD", "NOTICE_BATCH_BYTES", "NoticeKind", "PendingNotices"]

# What one batch may name, in bytes of nicknames and leave texts: about one datagram's worth,
# so that a batch crosses the network in one DATA packet (protocol.md 5.1).
NOTICE_BATCH_BYTES = 1000
# What each member costs a batch besides its nickname (msgpack headers, the reason code).
ENTRY_OVERHEAD = 3


class NoticeKind(Enum):
    JOIN = "join"
    LEAVE = "leave"


@dataclass
class PendingNotices:
    """The joins or the leaves waiting for the batch window to end."""

    kind: NoticeKind | None = None
    since: float = 0.0  # when the first of them happened: the batch's time
    deadline: float = math.inf
    joined: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    nicks: list[str] = field(default_factory=list)
    reasons: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    size: int = 0

    @property
    def count(self) -> int:
        return len(self.joined) + len(self.returned) + len(self.nicks)

    def start(self, kind: NoticeKind, now: float, window: float) -> None:
        self.kind, self.since, self.deadline = kind, now, now + window

    def add_join(self, nick: str, returned: bool) -> None:
        (self.returned if returned else self.joined).append(nick)
        self.size += len(nick.encode()) + ENTRY_OVERHEAD

    def add_leave(self, nick: str, reason: int, text: str) -> None:
        self.nicks.append(nick)
        self.reasons.append(reason)
        self.texts.append(text)
        self.size += len(nick.encode()) + len(text.encode()) + 2 * ENTRY_OVERHEAD

    def take_join(self, nick: str) -> bool:
        """Take a waiting join out (its member moved to another relay); whether it waited."""
        for waiting in (self.joined, self.returned):
            if nick in waiting:
                waiting.remove(nick)
                self.size -= len(nick.encode()) + ENTRY_OVERHEAD
                if not self.count:
                    self.clear()
                return True
        return False

    def full(self, limit: int) -> bool:
        return self.count >= limit or self.size >= NOTICE_BATCH_BYTES

    def clear(self) -> None:
        self.kind, self.since, self.deadline, self.size = None, 0.0, math.inf, 0
        for items in (self.joined, self.returned, self.nicks, self.reasons, self.texts):
            items.clear()

    def take(self, when: int) -> EventBuilder | None:
        """The waiting batch as an event to number, and nothing waiting any more."""
        event = self.build(when)
        self.clear()
        return event

    def build(self, when: int) -> EventBuilder | None:
        """The waiting batch as an event to number; it still waits (until ``clear``)."""
        kind = self.kind
        joined, returned = tuple(self.joined), tuple(self.returned)  # copies: clear() empties
        nicks, reasons, texts = tuple(self.nicks), tuple(self.reasons), tuple(self.texts)
        if kind is NoticeKind.JOIN:
            return lambda seq: m.JoinedBatch(seq, when, joined, returned)
        if kind is NoticeKind.LEAVE:
            return lambda seq: m.LeftBatch(seq, when, nicks, reasons, texts)
        return None
