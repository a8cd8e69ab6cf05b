"""A room log several relays share: one room, one order, whichever relay a member is on.

protocol.md 6.8. A ``SharedLog`` is a ``RoomLog`` that other relays append to as well (the
Redis store, udpchat.stores.redis; in tests, udpchat.relay.memory_shared). Every room event
is numbered by the shared log in one step, so the room has one total order; each relay fans
out to its own members every event of the room, its own and the others', in that order.

What a relay learns from the others arrives as ``Arrival`` items, which the core takes with
``arrived()`` (sans I/O: whatever talks to the store, a thread of the shell or the test, puts
them there). The contract the core relies on:

- ``append`` numbers the event after every event already in the log. When it returns seq S,
  ``arrived()`` holds every event of other relays numbered below S that the core has not
  taken yet, so that the core fans those out first. Events from others arrive in seq order,
  each exactly once, and never one of this relay's own.
- ``append`` with a message id already in the log (a post resent to another relay after a
  fail-over) appends nothing and returns the earlier event, ``new`` False.
- Nicknames are unique across the room: ``claim_nick`` succeeds for one live member only.
- ``find_member`` and ``move_member`` let a member's session resume on another relay; the
  relay it left gets ``MemberLeftForRelay`` and forgets the session without a LEFT. A
  session moved is no longer the old relay's: a relay lost later does not announce it.
  ``move_member`` says whether the old session's record was still there (between
  ``find_member`` and ``move_member`` the member may have been taken out as left).
- The store knows its posts by message id (``append``), so ``posted_ids`` may be empty;
  ``kept_members`` is this relay's own members only (none for a relay that just started:
  the other relays' members are not its to restore).
- A relay that dies is noticed by the others; exactly one of them gets ``RelayLost`` with the
  nicknames of its members that did not move, and announces them as left.
- ``append`` knows a message id as long as the event's history does, and the newest
  ``MIN_KEPT_IDS`` (1024) ids at least (protocol.md 6.8).
- ``LogUnavailable`` from any call: the store cannot be reached now. Nothing was changed;
  the relay refuses what needed the store and keeps serving its members. ``relay_id``,
  ``epoch``, ``waiting`` and ``arrived`` never raise it (they answer from what the log
  holds); ``last_seq`` and ``first_seq`` may (the core reads them only where it can).
- A store that lost the room (flushed, replaced) is a new ``epoch``: the log changes
  ``epoch`` and queues ``EpochChanged``; what it had queued before is of the old room. The
  core compares ``epoch`` before each datagram and timer and starts the room afresh (every
  local session reset). A call that finds the room lost may raise ``LogUnavailable``.
- The core recognises a ``SharedLog`` with ``isinstance`` (the protocol is runtime
  checkable): a log with every method below is taken for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from udpchat import messages as m
from udpchat.errors import UdpchatError
from udpchat.relay.room_log import EventBuilder, KeptMember, LoggedEvent, RoomLog

__all__ = [
    "RELAY_ID_SIZE", "Arrival", "EpochChanged", "ForeignEvent", "LogUnavailable",
    "MemberLeftForRelay", "PrivateArrived", "RelayLost", "SharedLog",
]

# protocol.md 6.8: a relay's id in a shared room, drawn from the injected random source.
RELAY_ID_SIZE = 8


class LogUnavailable(UdpchatError):
    """The shared log cannot be reached now (its store is down or unreachable)."""


@dataclass(frozen=True, slots=True)
class ForeignEvent:
    """A room event another relay appended, numbered and encoded as members receive it."""

    seq: int
    event: m.RoomEvent
    data: bytes
    origin: bytes  # the relay id that appended it


@dataclass(frozen=True, slots=True)
class PrivateArrived:
    """A private message another relay routed to one of this relay's members."""

    to: str  # the recipient's nickname
    data: bytes  # the encoded m.Private


@dataclass(frozen=True, slots=True)
class MemberLeftForRelay:
    """A member of this relay resumed its session on another relay: forget it, no LEFT."""

    token: bytes


@dataclass(frozen=True, slots=True)
class RelayLost:
    """Another relay died; this relay (and no other) announces its members as left."""

    relay: bytes
    nicks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EpochChanged:
    """The shared log lost its history (its store was flushed or replaced): the room starts
    afresh with a new epoch; members must be told history was lost."""

    epoch: bytes


Arrival = ForeignEvent | PrivateArrived | MemberLeftForRelay | RelayLost | EpochChanged


@runtime_checkable
class SharedLog(RoomLog, Protocol):
    @property
    def relay_id(self) -> bytes:
        """This relay's id in the room (RELAY_ID_SIZE bytes)."""
        ...

    # ``append`` (from RoomLog) may raise LogUnavailable, and returns the earlier event with
    # ``new`` False for a message id already logged.

    def append_many(
        self, events: list[tuple[EventBuilder, bytes]]
    ) -> list[LoggedEvent | LogUnavailable]:
        """``append`` for each (event, message id), in order, in one exchange with the store
        where it can: each result is what ``append`` would have returned for it alone, or
        the LogUnavailable it would have raised."""
        ...

    @property
    def waiting(self) -> bool:
        """Whether ``arrived()`` has something (the core's next timer is then now)."""
        ...

    def arrived(self) -> list[Arrival]:
        """Take what came from the other relays since the last call, in order."""
        ...

    def roster(self) -> list[str]:
        """The nicknames in the room as of ``last_seq`` (every relay's members), once, when
        the core starts; from then on the core follows the JOINED/LEFT/NICK_CHANGED events."""
        ...

    def claim_nick(self, nick: str, token: bytes) -> bool:
        """Hold ``nick`` for the session ``token`` of this relay; False if a live member of
        any relay holds it. Claims live as long as this relay does."""
        ...

    def release_nick(self, nick: str, token: bytes) -> None:
        """Let go of a nickname this relay's session held (left, or renamed)."""
        ...

    def find_member(self, token: bytes) -> KeptMember | None:
        """The member whose session is ``token``, on whichever relay (for a resume)."""
        ...

    def move_member(self, old_token: bytes, member: KeptMember) -> bool:
        """Session ``old_token`` (of another relay, or of this one) resumed here as
        ``member``: every nickname ``old_token`` held is let go, ``member.nick`` is held by
        ``member.token`` here (a new nickname the caller has claimed first), the member is
        kept as this relay's, and its old relay, if another and alive, gets
        ``MemberLeftForRelay``. Whether ``old_token``'s record was still there: False when
        it was forgotten meanwhile (it left, or its relay was lost and the member is being
        announced as left), so that the room must hear of the member anew."""
        ...

    def send_private(self, to: str, data: bytes) -> bool:
        """Hand a private message (encoded m.Private) to the relay of member ``to``; False
        if no member of the room has that nickname."""
        ...
