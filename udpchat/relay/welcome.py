"""A newcomer's welcome: WELCOME (the room's size and its first page), history, then its
announcement.

protocol.md 6.3 and 6.7: WELCOME lists the room as of its seq, and counts it, and history goes
up to that seq;
the newcomer's JOINED (or its place in a JOINED_BATCH) follows for the others. In a room
several relays share (6.8) the JOINED is logged before the WELCOME, which then says its
number, since the other relays may log events at any moment.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING

from udpchat import messages as m
from udpchat.relay.config import RelayConfig
from udpchat.relay.gate import Admission
from udpchat.relay.notices import NoticeKind, PendingNotices
from udpchat.relay.room_log import EventBuilder, RoomLog
from udpchat.relay.sessions import Member, SessionTable, members_fitting
from udpchat.relay.shared_log import LogUnavailable

if TYPE_CHECKING:
    from udpchat.relay.cluster import Cluster

__all__ = ["Welcoming"]


def _seq_of(data: bytes) -> int:
    """The number of an encoded room event."""
    event = m.decode_message(data)
    return event.seq if isinstance(event, m.RoomEvent) else 0


class Welcoming:
    """Mixin of ``Room``: welcoming an admitted member."""

    config: RelayConfig
    sessions: SessionTable
    log: RoomLog
    notices: PendingNotices
    cluster: Cluster | None
    held: bool
    _newest_welcome: int
    # The room's first page of names as last listed, and the part of it that fits WELCOME.
    _first_page: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    if TYPE_CHECKING:  # what Room provides

        def deliver(self, member: Member, data: bytes) -> bool: ...

        def flush_notices(self) -> None: ...

        def post(self, event: EventBuilder, exclude: Member | None, msgid: bytes = b"") -> int: ...

        def time(self, now: float) -> int: ...

        def _batching(self) -> bool: ...

        def _size(self) -> int: ...

        def _notice(self, kind: NoticeKind, now: float) -> PendingNotices: ...

    def welcome(self, admission: Admission, now: float) -> None:
        """WELCOME and history for an admitted member, then JOINED to everyone else (or,
        for a resume under another nickname, NICK_CHANGED to all)."""
        member, old, config, log = admission.member, admission.old, self.config, self.log
        batched = self._batching()
        cluster = self.cluster
        if self.notices.kind is NoticeKind.LEAVE or not batched:
            # WELCOME's list and seq already count these leaves; and a JOINED of our own,
            # which the newcomer does not receive, must be numbered WELCOME.seq + 1.
            if cluster is None and self.notices.kind is not None:
                # Logged now, fanned out once the newcomer's ACCEPT and WELCOME are on
                # their way: in a room of a thousand that fan-out takes milliseconds, and
                # the newcomer, whose WELCOME counts it, is not sent it (6.3).
                self.held = True
            self.flush_notices()
        if cluster is not None:
            self._welcome_shared(admission, cluster, batched, now)
            return
        member.welcome_seq = self._newest_welcome = log.last_seq
        # protocol.md 6.3: WELCOME lists the room as of its seq; members whose join waits
        # in a batch are named by that batch, which the newcomer receives too.
        size, notices = self._size(), self.notices
        waiting: set[str] = set()
        if notices.kind is NoticeKind.JOIN:
            waiting = {*notices.joined, *notices.returned}
            size -= len(waiting)
        paged = 0 < config.member_page < size
        if paged:  # protocol.md 6.7: the first page and the newcomer; WELCOME counts the rest
            # only as many names as a page holds are looked at, and measured again only
            # when the page changed: in a room of a thousand, most joins leave it as it was
            every = (nick for nick in self.sessions.nicks_in_order() if nick not in waiting)
            page = tuple(islice(every, config.welcome_names))
            if self._first_page[0] != page:
                self._first_page = (page, members_fitting(page))
            first = self._first_page[1]
            listed = first if member.nick in first else tuple(sorted((*first, member.nick)))
        else:
            listed = tuple(n for n in self.sessions.nick_list() if n not in waiting)
        welcome = m.Welcome(
            member.nick, listed, log.last_seq, log.first_seq, admission.resumed, size
        )
        self.deliver(member, m.encode_message(welcome))
        resume = admission.resume
        if resume is not None and resume.epoch == log.epoch:
            backlog = log.replay(resume.last_seq)
        else:
            backlog = log.recent_chats(config.join_history)
        self._send_history(member, backlog)
        when, nick = self.time(now), member.nick
        if old is None and batched:
            # protocol.md 6.3: announced with the others of this window, as WELCOME.seq + 1
            # at the latest (anything logged before that flushes the batch first).
            notices = self._notice(NoticeKind.JOIN, now)
            notices.add_join(nick, returned=resume is not None)
            if notices.full(config.notice_batch):
                self.held = True  # as below: the newcomer's WELCOME goes out first
                self.flush_notices()
        elif old is None:
            # Held until the next datagrams_to_send has taken the newcomer's ACCEPT and
            # WELCOME: in a big room, queueing JOINED for everyone takes milliseconds.
            self.held = True
            self.post(lambda seq: m.Joined(seq, when, nick), member)
        elif old.nick != nick:
            old_nick = old.nick
            self.post(lambda seq: m.NickChanged(seq, when, old_nick, nick), None)

    def _welcome_shared(
        self, admission: Admission, cluster: Cluster, batched: bool, now: float
    ) -> None:
        """protocol.md 6.8: as ``welcome``, in a room whose events other relays number too.
        A newcomer's JOINED is logged before its WELCOME, which then says its number: the
        newcomer does not receive it, and nothing another relay logs can come between."""
        member, old, resume = admission.member, admission.old, admission.resume
        when, nick = self.time(now), member.nick
        if member.token in cluster.unannounced:  # moved before its join was announced
            cluster.unannounced.discard(member.token)
            old = None
        if old is None and not batched:
            self.held = True  # the newcomer's WELCOME goes out first, as below
            self.post(lambda seq: m.Joined(seq, when, nick), member)
        seq = cluster.seq
        member.welcome_seq = self._newest_welcome = seq
        listed, size = self.sessions.nick_list(), self._size()
        notices = self.notices
        if notices.kind is NoticeKind.JOIN:
            waiting = {*notices.joined, *notices.returned}
            listed = tuple(n for n in listed if n not in waiting)
            size -= len(waiting)
        self._send_welcome(admission, listed, size, seq, cluster)
        if old is None and batched:
            notices = self._notice(NoticeKind.JOIN, now)
            notices.add_join(nick, returned=resume is not None)
            if notices.full(self.config.notice_batch):
                self.held = True
                self.flush_notices()
        elif old is not None and old.nick != nick:
            old_nick = old.nick
            self.post(lambda seq: m.NickChanged(seq, when, old_nick, nick), None)

    def _send_welcome(
        self,
        admission: Admission,
        listed: tuple[str, ...],
        size: int,
        seq: int,
        cluster: Cluster,
    ) -> None:
        """WELCOME (the room's size and first page) and the history up to ``seq``."""
        member, config, log = admission.member, self.config, self.log
        paged = 0 < config.member_page < size
        if paged:
            first = listed[: config.welcome_names]
            listed = first if member.nick in first else tuple(sorted((*first, member.nick)))
        try:
            first_seq = min(log.first_seq, seq + 1)
            if admission.resume is not None and admission.resume.epoch == cluster.epoch:
                backlog = log.replay(admission.resume.last_seq)
            else:
                backlog = log.recent_chats(config.join_history)
            if log.last_seq > seq:  # others' events not yet here come through the fan-out
                backlog = [d for d in backlog if _seq_of(d) <= seq]
        except LogUnavailable:  # the history cannot be read now: the member sees a gap
            cluster.failed()
            first_seq, backlog = seq + 1, []
        welcome = m.Welcome(member.nick, listed, seq, first_seq, admission.resumed, size)
        self.deliver(member, m.encode_message(welcome))
        self._send_history(member, backlog)

    def _send_history(self, member: Member, backlog: list[bytes]) -> None:
        """Newest first until half the send buffer is used: a gap, if any, is at the start,
        where the client can see it."""
        budget = self.config.link.send_buffer // 2
        kept: list[bytes] = []
        for data in reversed(backlog):
            budget -= len(data)
            if budget < 0:
                break
            kept.append(data)
        for data in reversed(kept):
            self.deliver(member, data)
