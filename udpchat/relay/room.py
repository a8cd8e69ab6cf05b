"""The room: who is in it, what they ask of it, and how its events reach every member.

Room events are numbered by the room log and fanned out through one FIFO, so that every
member sees one order even while a fan-out is held back (a newcomer's JOINED waits until its
WELCOME is on its way) and an answer to one member never overtakes the events queued before
it. Joins and leaves wait in a batch (udpchat.relay.notices) and enter the log as one event,
ahead of whatever else enters it; a newcomer's own WELCOME never waits. What members ask
of the room is answered in udpchat.relay.requests; a newcomer is welcomed in
udpchat.relay.welcome. In a room several relays share, the room log is shared and
udpchat.relay.cluster numbers and holds what this file would log (protocol.md 6.8).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from udpchat import messages as m
from udpchat.link import SendBufferFull
from udpchat.relay.config import MAX_SCALED_WINDOW, RelayConfig, RelayStats
from udpchat.relay.events import MemberRemoved
from udpchat.relay.notices import NoticeKind, PendingNotices
from udpchat.relay.outbox import Outbox
from udpchat.relay.requests import Requests
from udpchat.relay.room_log import EventBuilder, RoomLog
from udpchat.relay.sessions import Dormant, Member, SessionTable
from udpchat.relay.welcome import Welcoming

if TYPE_CHECKING:
    from udpchat.relay.cluster import Cluster

__all__ = ["MIN_REMEMBERED_IDS", "Room"]

# protocol.md 6.1: message ids remembered to answer a resent request without posting it
# twice: at least this many, and at least as many as the history holds.
MIN_REMEMBERED_IDS = 1024


class Room(Requests, Welcoming):
    """Membership, the room's event stream and its fan-out; requests: ``Requests``."""

    def __init__(
        self,
        config: RelayConfig,
        stats: RelayStats,
        outbox: Outbox,
        sessions: SessionTable,
        log: RoomLog,
        wall_offset: float,
    ) -> None:
        self.config = config
        self.stats = stats
        self.outbox = outbox
        self.sessions = sessions
        self.log = log
        self._wall_offset = wall_offset
        # msgid -> what it got: a room seq (SAY, ACTION) or (time, recipient) (PRIVATE_SEND)
        self._answered: dict[bytes, int | tuple[int, str]] = {}
        self._max_answered = max(config.history, MIN_REMEMBERED_IDS)
        # protocol.md 6.6: posts from before a restart are recognised when resent.
        self._answered.update(log.posted_ids(self._max_answered))
        # (data, excluded member, sole recipient, seq): room events to all but one, and
        # answers to one member (seq -1), which must not overtake events queued before them.
        self._fanout: deque[tuple[bytes, Member | None, Member | None, int]] = deque()
        self.held = False  # fan-out waits for the next datagrams_to_send (a newcomer's)
        self._draining = False
        self.notices = PendingNotices()
        # protocol.md 6.8: the shared-room side, when the log is shared by several relays
        self.cluster: Cluster | None = None
        # the newest WELCOME.seq given in a shared room: queued events at or below it skip
        # the members it was given to (-1: none, as with a relay of its own)
        self._newest_welcome = -1

    @property
    def pending(self) -> bool:
        """Fan-out is queued (held back, or stopped by a send of its own)."""
        return bool(self._fanout)

    def time(self, now: float) -> int:
        return min(max(int(now + self._wall_offset), 0), m.MAX_TIME)

    # --- fan-out ----------------------------------------------------------------------------

    def _posts_first(self) -> None:
        """Answers and messages to one member leave in the order of the requests that caused
        them (protocol.md 6.1): posts waiting to be numbered with the turn's others
        (udpchat.relay.cluster) are numbered and answered before anything else is sent."""
        cluster = self.cluster
        if cluster is not None and cluster.posts_waiting:
            cluster.flush_posts()

    def deliver(self, member: Member, data: bytes, lazy: bool = False) -> bool:
        self._posts_first()
        try:
            member.link.send(data, lazy)
        except SendBufferFull:
            return False
        self.stats.deliveries += 1
        self.sessions.mark(member)
        return True

    def _deliver_all(self, recipients: list[Member], data: bytes) -> list[Member]:
        """``deliver`` to each of ``recipients`` (one loop for a fan-out); those that could
        not take it."""
        laggards: list[Member] = []
        dirty = self.sessions.dirty  # sessions.mark, for each
        for member in recipients:
            try:
                member.link.send(data)
            except SendBufferFull:
                laggards.append(member)
                continue
            dirty[member] = None
        self.stats.deliveries += len(recipients) - len(laggards)
        return laggards

    @property
    def notice_deadline(self) -> float | None:
        """When the waiting join or leave notices must go out, if any wait."""
        return self.notices.deadline if self.notices.kind is not None else None

    def flush_notices(self) -> None:
        """Log the waiting joins or leaves as one batch event, sent to every member."""
        notices = self.notices
        if notices.kind is None:
            return
        if self.cluster is not None:  # 6.8: it waits on while the shared store is away
            self.cluster.flush_notices(notices, self.time(notices.since))
            return
        event = notices.take(self.time(notices.since))
        if event is not None:
            self._append(event, None)

    def flush_due(self, now: float) -> None:
        if now >= self.notices.deadline:
            self.flush_notices()

    def post(self, event: EventBuilder, exclude: Member | None, msgid: bytes = b"") -> int:
        """Append a room event to the log, after any waiting notices, and fan it out to
        every member but one; its seq. ``msgid``: the id of the post it is, kept with it in
        the log."""
        self.flush_notices()
        notices = self.notices
        if notices.kind is not None:  # a shared store away: the batch is held first
            assert self.cluster is not None
            self.cluster.hold_notices(notices, self.time(notices.since))
        return self._append(event, exclude, msgid)

    def _batching(self) -> bool:
        """Whether joins and leaves wait for a batch now (config.batch_notices_above)."""
        config = self.config
        return config.notice_window > 0 and self._size() > config.batch_notices_above

    def notice_window(self) -> float:
        """How long a batch waits (protocol.md 6.3): the configured window, or in a large
        room N / notice_fanout seconds, up to MAX_SCALED_WINDOW."""
        config = self.config
        scaled = min(self._size() / config.notice_fanout, MAX_SCALED_WINDOW)
        return max(config.notice_window, scaled)

    def _size(self) -> int:
        """The room's members: live, those not back yet since a restart (6.6), and those
        on the other relays of a shared room (6.8)."""
        sessions = self.sessions
        return len(sessions.members) + len(sessions.dormant) + len(sessions.remote)

    def _notice(self, kind: NoticeKind, now: float) -> PendingNotices:
        """The batch a notice of ``kind`` joins: the other kind waiting goes out first."""
        notices = self.notices
        if notices.kind is not kind:
            self.flush_notices()
            if notices.kind is not None:  # a shared store away: held as it is, in order
                assert self.cluster is not None
                self.cluster.hold_notices(notices, self.time(notices.since))
            notices.start(kind, now, self.notice_window())
        return notices

    def _append(self, event: EventBuilder, exclude: Member | None, msgid: bytes = b"") -> int:
        if self.cluster is not None:  # numbered by the shared log; held while it is away
            seq = self.cluster.notice(event, exclude)
            self.kick()
            return seq
        logged = self.log.append(event, msgid)
        self._fanout.append((logged.data, exclude, None, logged.seq))
        if not self.held:
            self.drain()
        return logged.seq

    def queue_event(self, data: bytes, exclude: Member | None, seq: int) -> None:
        """Queue a room event numbered ``seq`` for every member but ``exclude``."""
        self._fanout.append((data, exclude, None, seq))

    def kick(self) -> None:
        """Let the queued fan-out go, unless a newcomer's WELCOME holds it back."""
        if not self.held:
            self.drain()

    def send_to(self, member: Member, data: bytes) -> None:
        """A message for one member, in stream order; a member that cannot take it is
        dropped, as in the fan-out."""
        self._posts_first()
        if self._fanout:
            self._fanout.append((data, None, member, -1))
        elif not self.deliver(member, data) and member.live:
            self.remove(member, m.LeaveReason.DROPPED, "could not keep up", None)

    def restart(self) -> None:
        """The shared log started afresh (a new epoch): nothing queued or waiting is of the
        new room."""
        self._fanout.clear()
        self.notices.clear()
        self._answered.clear()
        self.held = False
        self._newest_welcome = -1

    def release(self) -> None:
        """The newcomer's first datagrams are out: let the held fan-out go."""
        self.held = False
        self.drain()

    def drain(self) -> None:
        if self._draining:
            return  # a LEFT posted while draining joins the queue behind the current event
        self._draining = True
        try:
            while self._fanout:
                data, exclude, only, seq = self._fanout.popleft()
                if only is not None:
                    recipients = [only] if only.live else []
                elif seq <= self._newest_welcome:  # a newcomer's WELCOME already counts it
                    members = self.sessions.members.values()
                    recipients = [
                        mb for mb in members if mb is not exclude and mb.welcome_seq < seq
                    ]
                else:
                    members = self.sessions.members.values()
                    recipients = [mb for mb in members if mb is not exclude]
                laggards = self._deliver_all(recipients, data)
                for member in laggards:
                    if member.live:
                        self.remove(member, m.LeaveReason.DROPPED, "could not keep up", None)
        finally:
            self._draining = False

    def queue_answer(self, member: Member, message: m.RelayMessage) -> None:
        """An answer queued behind the fan-out, sent when it is let go (``kick``)."""
        self._fanout.append((m.encode_message(message), None, member, -1))

    def answer(self, member: Member, message: m.RelayMessage) -> bool:
        """Send a member the answer to its request; a member whose queue cannot take even
        that is dropped, since answers matched by counting would otherwise go astray."""
        if self.cluster is not None and not member.live:
            return False  # gone meanwhile (its shared store lost the room, say)
        self._posts_first()
        data = m.encode_message(message)
        if self._fanout:  # events are held: the answer queues behind them, in room order
            self._fanout.append((data, None, member, -1))
            return True
        # protocol.md 5.3: the ACK of a POSTED may ride on the poster's next request
        if self.deliver(member, data, type(message) is m.Posted):
            return True
        if member.live:
            self.remove(member, m.LeaveReason.DROPPED, "could not keep up", None)
        return False

    # --- coming and going -------------------------------------------------------------------

    def remove(
        self,
        member: Member,
        reason: m.LeaveReason,
        text: str,
        now: float | None,
        closing: bool = False,
    ) -> None:
        """Take a member out of the room and tell everyone (LEFT)."""
        self.sessions.forget(member, closing)
        if self.cluster is not None:
            self.cluster.left(member.nick, member.token)
        else:
            self.log.forget_member(member.token)
        self.outbox.report(MemberRemoved(member.nick, m.leave_reason_words(reason), text))
        self.announce_leave(
            member.nick, reason, text, now if now is not None else member.last_heard
        )

    def announce_leave(self, nick: str, reason: m.LeaveReason, text: str, moment: float) -> None:
        """LEFT, or a place in the waiting LEFT_BATCH in a large room (protocol.md 6.3)."""
        if self._batching():
            notices = self._notice(NoticeKind.LEAVE, moment)
            notices.add_leave(nick, reason, text)
            if notices.full(self.config.notice_batch):
                self.flush_notices()
            return
        when = self.time(moment)
        self.post(lambda seq: m.Left(seq, when, nick, reason, text), None)

    def expire(self, dormant: Dormant, now: float) -> None:
        """A member from before a restart did not come back in time: it left (protocol.md
        6.6), announced once, as a timeout."""
        self.sessions.wake(dormant)
        self.log.forget_member(dormant.token)
        reason = m.LeaveReason.TIMEOUT
        words = m.leave_reason_words(reason)
        self.outbox.report(MemberRemoved(dormant.nick, words, words))
        self.announce_leave(dormant.nick, reason, words, now)

    def announce_shutdown(self, reason: str) -> None:
        self.flush_notices()
        notice = m.encode_message(m.Shutdown(reason))
        for member in self.sessions.members.values():
            self.deliver(member, notice)
