"""Several relays, one room: what the relay core does with a shared log (protocol.md 6.8).

The room's events are numbered by the shared log (``udpchat.relay.shared_log``), so each
relay fans out to its own members the events of every relay, in seq order: when an own event
is appended as seq S, the other relays' events numbered below S that have arrived are queued
first. The relay follows the room-wide roster (``SessionTable.remote``) from those events, so
that member lists, room size and nicknames cover the whole room.

Invariants:

* ``seq`` is the newest event queued to the local fan-out; a WELCOME says that number, and
  what a newcomer is sent from the fan-out is numbered above it (``Member.welcome_seq``).
* Nothing is lost or reordered while the store cannot be reached: a post is refused
  (REFUSED) and a join rejected, so that the client sends it again; a room event the relay
  owes the others (a leave, a join or nick change already done locally, a batch) and the
  store calls that go with leaving are held, in order, and done before anything else is
  appended once the store answers again (``MAX_HELD`` at most: beyond it the oldest is
  dropped and counted). The store's clean-ups (a session to forget, a nickname to let go)
  are never dropped: they are kept apart, as sets bounded by the members this relay had,
  and done after the rest; dropped, a nickname would stay claimed, refreshed, for the
  relay's lifetime, and its session be announced as left when this relay dies. A batch
  of joins or leaves waits on as a batch meanwhile, so that a member that moves to another
  relay can still be taken out of it.
* An epoch change resets every local session (a RESET, as a relay that lost its room
  does), so that each member rejoins into the new epoch as after a relay restart.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from udpchat import handshake as hs
from udpchat import messages as m
from udpchat import wire
from udpchat.names import nick_key
from udpchat.relay.events import RoomNotice
from udpchat.relay.notices import PendingNotices
from udpchat.relay.room_log import EventBuilder, LoggedEvent
from udpchat.relay.sessions import Member
from udpchat.relay.shared_log import (
    EpochChanged,
    ForeignEvent,
    LogUnavailable,
    MemberLeftForRelay,
    PrivateArrived,
    RelayLost,
    SharedLog,
)
from udpchat.relay.shared_members import STORE_DOWN, STORE_REFUSAL, SharedMembers

if TYPE_CHECKING:
    from udpchat.relay.room import Room

__all__ = ["MAX_HELD", "RELAY_LOST_TEXT", "RETRY_INTERVAL", "Cluster"]

# How often held work is tried again while the store cannot be reached, in seconds.
RETRY_INTERVAL = 0.5
# Held room events and store calls, at most (a relay cut off for long sheds the oldest).
MAX_HELD = 4096
# protocol.md 6.8: a lost relay's members leave as dropped, with these words.
RELAY_LOST_TEXT = "their relay was lost"


class Cluster(SharedMembers):
    """The shared-room side of one relay's ``Room``."""

    def __init__(self, room: Room, log: SharedLog, reset_secret: bytes) -> None:
        self.room = room
        self.log = log
        self._reset_secret = reset_secret  # protocol.md 7.2: to end sessions with a RESET
        self.epoch = log.epoch
        try:
            self.seq = log.last_seq  # what came before this relay is history to it
        except LogUnavailable:
            self.seq = 0  # what arrives is all there is to send
        self.pending: deque[object] = deque()  # arrivals taken but not yet handled
        self.held: deque[Callable[[], None]] = deque()
        # the store's clean-ups held (never dropped): sessions to forget, (nick, token)s to
        # let go; done after ``held``, in which nothing of theirs can come after them
        self.to_forget: dict[bytes, None] = {}
        self.to_release: dict[tuple[str, bytes], None] = {}
        # seq -> the member whose resent post another relay logged as that event, still on
        # its way here: answered POSTED, and not sent the event, when it comes
        self._posted_elsewhere: dict[int, Member] = {}
        # Posts of this serving turn, numbered together when the turn's output is taken
        # (``flush_posts``: one exchange with the store for all of them), or before any
        # other event is appended, so that the room's order is the order they came in.
        self._posts: list[tuple[Member, EventBuilder, bytes]] = []
        self.retry_at = math.inf
        self.now = 0.0  # the core's latest time (for work held without one)
        self.down = False  # the store failed and has not answered since
        self.unannounced: set[bytes] = set()
        self.announce_again: dict[bytes, float] = {}
        self._roster_due = True  # the room-wide roster is still to be read
        self._read_roster()

    # --- the store's health -----------------------------------------------------------------

    def failed(self) -> None:
        self.room.stats.store_failures += 1
        if not self.down:
            self.down = True
            self.room.outbox.report(
                RoomNotice(f"{STORE_DOWN}: posts refused, joins rejected, leaves held")
            )

    def answered(self) -> None:
        if self.down:
            self.down = False
            self.room.outbox.report(RoomNotice("the room's store answers again"))

    @property
    def holding(self) -> bool:
        """Whether some store work waits for the store to answer again."""
        return bool(self.held or self.to_forget or self.to_release)

    def call(self, work: Callable[[], None]) -> None:
        """A store call that must happen: now if nothing is held and the store answers,
        else held behind what is."""
        if not self.holding:
            try:
                work()
                self.answered()
                return
            except LogUnavailable:
                self.failed()
        self.hold(work)

    def hold(self, work: Callable[[], None]) -> None:
        if len(self.held) >= MAX_HELD:
            self.held.popleft()
            self.room.stats.store_lost += 1
        self.held.append(work)
        self._held_one()

    def _held_one(self) -> None:
        self.room.stats.store_held += 1
        self.retry_at = min(self.retry_at, self.now + RETRY_INTERVAL)

    def retry(self) -> None:
        """Do the held work, oldest first, then the clean-ups; LogUnavailable if some is
        still held."""
        held, log = self.held, self.log
        try:
            while held:
                held[0]()
                held.popleft()
            while self.to_release:
                release = next(iter(self.to_release))
                log.release_nick(*release)
                del self.to_release[release]
            while self.to_forget:
                token = next(iter(self.to_forget))
                log.forget_member(token)
                del self.to_forget[token]
        except LogUnavailable:
            self.failed()
            self.retry_at = self.now + RETRY_INTERVAL
            raise
        self.retry_at = math.inf
        self.answered()

    # --- numbering ----------------------------------------------------------------------------

    def append(self, event: EventBuilder, msgid: bytes = b"") -> LoggedEvent:
        """Append after the held work and this turn's posts; the other relays' events
        numbered below it are queued to the fan-out first. LogUnavailable: nothing was
        appended."""
        if self._posts:
            self.flush_posts()
        if self.holding:
            self.retry()
        return self._append(event, msgid)

    def _append(self, event: EventBuilder, msgid: bytes = b"") -> LoggedEvent:
        try:
            logged = self.log.append(event, msgid)
        except LogUnavailable:
            self.failed()
            raise
        self.answered()
        self._take(below=logged.seq)
        return logged

    def notice(self, event: EventBuilder, exclude: Member | None) -> int:
        """Log and queue a room event that is not a post; held if the store cannot take
        it now (its seq, or 0 when held)."""
        try:
            logged = self.append(event)
        except LogUnavailable:
            self.hold(lambda: self._queue_own(self._append(event), None))
            return 0
        self._queue_own(logged, exclude)
        return logged.seq

    def flush_notices(self, notices: PendingNotices, when: int) -> None:
        """Log the waiting batch. While the store is away it waits on, so that a member
        that moves meanwhile can still be taken out of it (``take_join``); a full batch is
        held instead, so that it never grows past what one event may name."""
        event = notices.build(when)
        assert event is not None
        try:
            logged = self.append(event)
        except LogUnavailable:
            if notices.full(self.room.config.notice_batch):
                self.hold_notices(notices, when)
            else:
                notices.deadline = self.now + RETRY_INTERVAL
            return
        notices.clear()
        self._queue_own(logged, None)
        self.room.kick()

    def hold_notices(self, notices: PendingNotices, when: int) -> None:
        """Hold the waiting batch as it is, behind what is held, and wait for no more."""
        event = notices.take(when)
        assert event is not None
        self.hold(lambda: self._queue_own(self._append(event), None))

    def _queue_own(self, logged: LoggedEvent, exclude: Member | None) -> None:
        if logged.new:
            self.seq = logged.seq
            self.room.queue_event(logged.data, exclude, logged.seq)

    def post(self, member: Member, event: EventBuilder, msgid: bytes) -> int | None:
        """A member's post: appended (or found by its message id), answered POSTED after
        the events numbered below it; None if refused because the store is away, or if it
        waits to be numbered with the turn's other posts (``flush_posts`` answers it)."""
        if self.room.notices.kind is None and not self.holding and not self.down:
            self._posts.append((member, event, msgid))
            return None
        try:
            if self.room.notices.kind is not None:  # a batch the store could not take
                raise LogUnavailable(STORE_DOWN)  # must come first
            logged = self.append(event, msgid)
        except LogUnavailable:
            self._refuse(member)
            return None
        return self._posted(member, logged)

    @property
    def posts_waiting(self) -> bool:
        return bool(self._posts)

    def flush_posts(self) -> None:
        """Number this turn's posts, in the order they came, in one exchange with the store
        (each appended as ``post`` would have, and answered: POSTED or REFUSED).

        Each post's event and answer are queued in turn and the fan-out is let go once, at
        the end: a send that drops a member who cannot keep up logs a LEFT, which the store
        numbers after the whole batch, so it must not go out before the batch's events."""
        posts, self._posts = self._posts, []
        if not posts:
            return
        room = self.room
        try:
            results = self.log.append_many([(event, msgid) for _, event, msgid in posts])
        except LogUnavailable as error:  # the contract says it answers each instead
            results = [error] * len(posts)
        except Exception:
            for member, _, _ in posts:  # every post still gets its one answer
                room.stats.store_refused += 1
                room.queue_answer(member, m.Refused(STORE_REFUSAL))
            room.kick()
            raise
        for (member, _, msgid), result in zip(posts, results, strict=True):
            if isinstance(result, LogUnavailable):
                self.failed()
                room.stats.store_refused += 1
                room.queue_answer(member, m.Refused(STORE_REFUSAL))
                continue
            self.answered()
            self._take(below=result.seq)
            seq, now = self._number(member, result)
            room._remember(msgid, seq)
            if now:
                room.queue_answer(member, m.Posted(seq))
        room.kick()

    def _refuse(self, member: Member) -> None:
        self.room.stats.store_refused += 1
        self.room.answer(member, m.Refused(STORE_REFUSAL))

    def _posted(self, member: Member, logged: LoggedEvent) -> int:
        """A post the store took (or knew by its message id): fanned out, answered."""
        seq, now = self._number(member, logged)
        if now:
            self.room.answer(member, m.Posted(seq))
            self.room.kick()
        return seq

    def _number(self, member: Member, logged: LoggedEvent) -> tuple[int, bool]:
        """Queue a post the store took; its number, and whether to answer it now: not when
        another relay logged it first and its event has not reached this relay yet (it is
        answered when it does: ``_posted_elsewhere``)."""
        if not logged.new:
            self.room.stats.resent_requests += 1
            if logged.seq > self.seq:  # logged by another relay, not fanned out here yet
                self._posted_elsewhere[logged.seq] = member
                return logged.seq, False
        self._queue_own(logged, member)
        return logged.seq, True

    # --- what the other relays did ------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        return bool(self.pending) or self.log.waiting

    def deadline(self) -> float | None:
        """When held work is to be tried again (``waiting`` is the core's to check)."""
        if self.announce_again:
            return self.now
        if self.holding:
            return self.retry_at
        return self.now + RETRY_INTERVAL if self._roster_due else None

    def _take(self, below: int | None = None) -> None:
        """Take the arrivals; with ``below``, queue at once the other relays' events
        numbered below it (they come before an own event of that number)."""
        if self.log.waiting:
            self.pending.extend(self.log.arrived())
        if below is None:
            return
        keep: deque[object] = deque()
        for item in self.pending:
            if isinstance(item, ForeignEvent) and item.seq < below:
                self._fan_out(item)
            else:
                keep.append(item)
        self.pending = keep

    def handle(self, now: float) -> None:
        """Handle what arrived, in order, and retry held work when it is due."""
        self.now = now
        if self.holding and now >= self.retry_at:
            with contextlib.suppress(LogUnavailable):
                self.retry()
        if self._roster_due:
            self._read_roster()
        self._take()
        while self.pending:  # (an epoch change replaces the queue)
            item = self.pending.popleft()
            match item:
                case ForeignEvent():
                    self._fan_out(item)
                case PrivateArrived(to=to, data=data):
                    self._private(to, data)
                case MemberLeftForRelay(token=token):
                    self._moved_away(token)
                case RelayLost():
                    self._relay_lost(item, now)
                case EpochChanged(epoch=epoch) if epoch != self.epoch:
                    self.restart(taken=True)
        self.rejoin_due(now)
        self.room.kick()

    def _fan_out(self, item: ForeignEvent) -> None:
        if item.seq <= self.seq:
            return  # the contract says this never happens: never twice, never back
        self.seq = item.seq
        self.room.stats.foreign_events += 1
        poster = self._posted_elsewhere.pop(item.seq, None)
        self.room.queue_event(item.data, poster, item.seq)
        if poster is not None:  # its POSTED in its place in the stream
            self.room.answer(poster, m.Posted(item.seq))
        self._follow(item.event, item.seq)

    def _private(self, to: str, data: bytes) -> None:
        member = self.room.sessions.by_nick.get(nick_key(to))
        if member is None:
            self.room.stats.privates_undelivered += 1  # it left (or moved) on the way
            return
        self.room.send_to(member, data)

    def _moved_away(self, token: bytes) -> None:
        """A member resumed on another relay: forget its session here, silently (no LEFT:
        it is still in the room, on the other relay)."""
        sessions = self.room.sessions
        member = sessions.members.get(token)
        if member is None:
            return
        # A join still waiting here is the other relay's to announce (it does, not having
        # heard of it): announced here later, it could come after what the member does there.
        unannounced = self.room.notices.take_join(member.nick)
        sessions.forget(member)
        # Its claim went with the move; but this relay's store may have refreshed it (from
        # before it knew) after the move: let it go (a claim of the new session stays).
        self.clean_up(release=(member.nick, token))
        if not unannounced:  # the room knows it: a member of another relay now
            sessions.add_remote(member.nick)
        self.room.outbox.report(RoomNotice(f"{member.nick} moved to another relay"))

    def _relay_lost(self, lost: RelayLost, now: float) -> None:
        """Another relay died: its members that did not move leave, announced once."""
        self.room.stats.relays_lost += 1
        self.room.outbox.report(
            RoomNotice(f"relay {lost.relay.hex()} was lost; {len(lost.nicks)} of its members left")
        )
        for nick in lost.nicks:
            self.room.sessions.drop_remote(nick)
            self.room.announce_leave(nick, m.LeaveReason.DROPPED, RELAY_LOST_TEXT, now)

    def restart(self, taken: bool = False) -> None:
        """The store lost the room (a new epoch): every local session is reset, as a relay
        that lost its room would, and the room starts afresh from the store. ``taken``: its
        EpochChanged was just taken from the arrivals (the rest came after it)."""
        room, sessions = self.room, self.room.sessions
        self.room.stats.epoch_changes += 1
        self.epoch = self.log.epoch
        self.seq = 0
        self.held.clear()
        self.to_forget.clear()
        self.to_release.clear()
        self._posted_elsewhere.clear()
        self._posts.clear()  # of sessions reset now: their members send them again
        self.unannounced.clear()
        self.announce_again.clear()
        self.retry_at = math.inf
        # What came before the change is of the old room; what came after, of the new.
        pending = list(self.pending)
        marks = [i for i, item in enumerate(pending) if isinstance(item, EpochChanged)]
        if marks:
            self.pending = deque(pending[marks[-1] + 1 :])
        elif not taken:  # its EpochChanged is still to come: all here is of the old room
            self.pending.clear()
        for member in list(sessions.members.values()):
            # protocol.md 7.2: provably ours; to a proven address, so no reply budget
            proof = hs.reset_token(self._reset_secret, member.token)
            room.outbox.send(wire.encode_reset(member.token, proof), member.addr)
            room.stats.resets += 1
            sessions.forget(member)
        room.restart()
        self._read_roster()
        room.outbox.report(
            RoomNotice("the room's store lost its history: a new epoch, members rejoin")
        )

    def check_epoch(self) -> None:
        """Called before each datagram and timer: a store that lost the room changes its
        epoch (and queues EpochChanged); the relay restarts the room before anything else."""
        if self.log.epoch != self.epoch:
            self._take()
            self.restart()
