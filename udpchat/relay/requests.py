"""What members ask of the room: posts, private messages, nick changes and member lists.

Every SAY, ACTION, PRIVATE_SEND, NICK and WHO gets exactly one answer (protocol.md 6.1), even
when it cannot be read; requests pass flood control first (6.5); a request resent after a
rejoin is recognised by its message id and answered as it was the first time.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from udpchat import messages as m
from udpchat import wire
from udpchat.names import nick_error, nick_key
from udpchat.relay.config import RelayConfig, RelayStats
from udpchat.relay.events import MemberNickChanged
from udpchat.relay.outbox import Outbox
from udpchat.relay.room_log import EventBuilder, KeptMember, RoomLog
from udpchat.relay.sessions import Member, SessionTable, members_fitting
from udpchat.relay.shared_log import LogUnavailable
from udpchat.relay.shared_members import STORE_DOWN, STORE_REFUSAL

if TYPE_CHECKING:
    from udpchat.relay.cluster import Cluster

__all__ = ["LIST_OVERHEAD", "POSTED_AS", "REFUSAL", "Requests"]

# What a member list costs besides its nicknames: the DATA datagram around it.
LIST_OVERHEAD = 40
# How a request that could not be read is answered: a post is REFUSED, anything else ERROR.
REFUSAL: dict[int, type[m.Refused] | type[m.Error]] = {
    m.MessageKind.SAY: m.Refused,
    m.MessageKind.ACTION: m.Refused,
}
# The room event a post becomes.
POSTED_AS: dict[type[m.Say] | type[m.Action], type[m.ChatMessage] | type[m.ActionMessage]] = {
    m.Say: m.ChatMessage,
    m.Action: m.ActionMessage,
}


class Requests:
    """Mixin of ``Room``: the request handlers, on the room's state."""

    config: RelayConfig
    stats: RelayStats
    outbox: Outbox
    sessions: SessionTable
    log: RoomLog
    _answered: dict[bytes, int | tuple[int, str]]
    _max_answered: int
    cluster: Cluster | None

    if TYPE_CHECKING:  # what Room provides

        def answer(self, member: Member, message: m.RelayMessage) -> bool: ...

        def post(self, event: EventBuilder, exclude: Member | None, msgid: bytes = b"") -> int: ...

        def flush_notices(self) -> None: ...

        def deliver(self, member: Member, data: bytes) -> bool: ...

        def time(self, now: float) -> int: ...

        def _size(self) -> int: ...

        def remove(
            self,
            member: Member,
            reason: m.LeaveReason,
            text: str,
            now: float | None,
            closing: bool = False,
        ) -> None: ...

    def on_message(self, member: Member, data: bytes, now: float) -> None:
        try:
            message = m.decode_message(data)
        except wire.DecodeError as exc:
            self.stats.bad_messages += 1
            self.outbox.drop(f"bad message: {exc}", member.addr)
            self._answer_undecodable(member, data, exc, now)
            return
        match message:
            case m.Say() | m.Action():
                self._on_post(member, message, now)
            case m.PrivateSend():
                self._on_private(member, message, now)
            case m.NickRequest(nick=nick):
                problem = self._flood(member, now)
                if problem is not None:
                    self.answer(member, m.Error(problem))
                else:
                    self._rename(member, nick, now)
            case m.Who():
                problem = self._flood(member, now)
                if problem is None:
                    self._answer_who(member, None)
                else:
                    self.answer(member, m.Error(problem))
            case m.WhoPage(after=after):
                problem = self._flood(member, now)
                if problem is None:
                    self._answer_who(member, after)
                else:
                    self.answer(member, m.Error(problem))
            case m.Quit(reason=reason):
                self.remove(member, m.LeaveReason.QUIT, reason, now, closing=True)
                member.link.acknowledge_now()  # flushed once more, though forgotten
            case _:
                self.stats.bad_messages += 1
                self.outbox.drop(f"a client may not send {type(message).__name__}", member.addr)

    def _on_post(self, member: Member, message: m.Say | m.Action, now: float) -> None:
        problem = self._flood(member, now)
        earlier = self._answered.get(message.msgid) if message.msgid else None
        if problem is None and isinstance(earlier, int):  # resent: posted already
            self.stats.resent_requests += 1
            self.answer(member, m.Posted(earlier))
            return
        if problem is None:
            problem = m.text_error(message.text)
        if problem is not None:
            self.answer(member, m.Refused(problem))
            return
        if self.cluster is not None:
            # protocol.md 6.8: the shared log numbers it (or knows it by its message id).
            self.flush_notices()
            kind, when, nick, text = (
                POSTED_AS[type(message)], self.time(now), member.nick, message.text
            )
            posted = self.cluster.post(
                member, lambda seq: kind(seq, when, nick, text), message.msgid
            )
            if posted is not None:
                self._remember(message.msgid, posted)
            return
        # protocol.md 6.3: the number is taken only if the POSTED could be queued; a
        # sender dropped instead leaves no gap (its LEFT takes the number). Waiting
        # notices are logged first, so the number is known before the POSTED is queued.
        self.flush_notices()
        number = self.log.last_seq + 1
        if not self.answer(member, m.Posted(number)):
            return
        self._remember(message.msgid, number)
        kind, when, nick, text = POSTED_AS[type(message)], self.time(now), member.nick, message.text
        posted = self.post(lambda seq: kind(seq, when, nick, text), member, message.msgid)
        assert posted == number  # nothing else was appended since the POSTED was queued

    def _answer_undecodable(
        self, member: Member, data: bytes, exc: wire.DecodeError, now: float
    ) -> None:
        """protocol.md 6.1: a request gets its one answer even when it cannot be read (too
        long, or a field out of range), or a client counting answers would pair every later
        one with the wrong request."""
        kind = m.peek_kind(data)
        if kind not in m.ANSWERED_KINDS:
            return  # not a request that is answered (or not one at all)
        oversized = member.link.stats.oversized > member.oversized_answered
        member.oversized_answered = member.link.stats.oversized
        flood = self._flood(member, now)  # charged first, like every request (6.5)
        if flood is not None:
            reason = flood
        elif oversized or len(data) > m.MAX_TEXT_BYTES:
            reason = f"message too long: the limit is {m.MAX_TEXT_BYTES} bytes of UTF-8"
        else:
            reason = f"the relay could not read this request ({exc})"
        assert kind is not None
        self.answer(member, REFUSAL.get(kind, m.Error)(reason[: wire.MAX_REASON_BYTES // 4]))

    def _answer_who(self, member: Member, after: str | None) -> None:
        """MEMBERS (to WHO) or a MEMBERS_PAGE (to WHO_PAGE, the members sorted after
        ``after``), if the member has sent enough to earn it: a tiny WHO must not buy a big
        list over and over (protocol.md 6.5)."""
        # protocol.md 6.7: a list is exact at its place in the stream, so the joins and
        # leaves it already reflects must be logged before it.
        self.flush_notices()
        listed = self.sessions.nick_list()
        page: m.Members | m.MembersPage = m.Members(listed)
        if after is not None:
            every = self.sessions.sorted_nicks()
            start = bisect.bisect_right(every, after)
            end = start + (self.config.member_page or len(every))
            listed = members_fitting(every[start:end])  # a page is one message too
            more = start + len(listed) < len(every)
            page = m.MembersPage(self._size(), after, listed, more)
        cost = sum(len(nick.encode()) + 1 for nick in listed) + LIST_OVERHEAD
        if cost > member.answer_credit:
            self.stats.flood_refused += 1
            reason = "" if member.list_told else "too many member lists; try again in a moment"
            member.list_told = True
            self.answer(member, m.Error(reason))
            return
        member.list_told = False
        member.answer_credit -= cost
        self.answer(member, page)

    def _claim_elsewhere(self, member: Member, nick: str) -> str | None:
        """protocol.md 6.8: a new nickname must be free on every relay of the room."""
        assert self.cluster is not None
        try:
            claimed = self.cluster.claim(nick, member.token)
        except LogUnavailable:
            return f"{STORE_DOWN}: try again in a moment"
        return None if claimed else f"the nickname {nick} is taken"

    def _remember(self, msgid: bytes, answer: int | tuple[int, str]) -> None:
        """Keep what a request with a message id got, for a copy resent after a rejoin."""
        if not msgid:
            return
        answered = self._answered
        while len(answered) >= self._max_answered:
            del answered[next(iter(answered))]
        answered[msgid] = answer

    def _flood(self, member: Member, now: float) -> str | None:
        """None if the request may go ahead; else its refusal. protocol.md 6.5: only the first
        refusal of a burst says why; the rest are empty, so that refusals can never make the
        relay send a member much more than it sent."""
        if member.bucket.take(now):
            member.flood_told = False
            return None
        self.stats.flood_refused += 1
        if member.flood_told:
            return ""
        member.flood_told = True
        return (
            f"flood control: at most {self.config.flood_burst} messages at once, "
            f"then {self.config.flood_rate:g} a second; this one was not delivered"
        )

    def _on_private(self, member: Member, message: m.PrivateSend, now: float) -> None:
        problem = self._flood(member, now)
        earlier = self._answered.get(message.msgid) if message.msgid else None
        if problem is None and isinstance(earlier, tuple):  # resent: delivered already
            self.stats.resent_requests += 1
            when, to = earlier
            self.answer(member, m.Private(when, member.nick, to, message.text))
            return
        target = self.sessions.by_nick.get(nick_key(message.to))
        if problem is None:
            problem = m.text_error(message.text)
        if problem is None and target is None and self.cluster is not None:
            self._private_elsewhere(member, message, now)
            return
        if problem is None and target is None:
            problem = f"no such nickname: {message.to}"
        if problem is not None or target is None:
            self.answer(member, m.Error(problem or ""))
            return
        private = m.Private(self.time(now), member.nick, target.nick, message.text)
        if target is not member and not self.deliver(target, m.encode_message(private)):
            self.remove(target, m.LeaveReason.DROPPED, "could not keep up", None)
            self.answer(member, m.Error(f"{target.nick} could not take the message"))
            return
        self._remember(message.msgid, (private.time, private.to))
        self.answer(member, private)

    def _private_elsewhere(self, member: Member, message: m.PrivateSend, now: float) -> None:
        """protocol.md 6.8: a private message to a member of another relay of the room."""
        assert self.cluster is not None
        to = self.sessions.remote.get(nick_key(message.to))
        private = m.Private(self.time(now), member.nick, to or message.to, message.text)
        try:
            sent = to is not None and self.cluster.send_private(to, m.encode_message(private))
        except LogUnavailable:
            self.answer(member, m.Error(STORE_REFUSAL))
            return
        if not sent:
            self.answer(member, m.Error(f"no such nickname: {message.to}"))
            return
        self._remember(message.msgid, (private.time, private.to))
        self.answer(member, private)

    def _rename(self, member: Member, nick: str, now: float) -> None:
        problem = nick_error(nick)
        key = nick_key(nick) if problem is None else ""
        holder = self.sessions.by_nick.get(key)
        if problem is None and holder is not None and holder is not member:
            problem = f"the nickname {nick} is taken"
        if problem is None and nick == member.nick:
            problem = f"you are already {nick}"
        if problem is None and self.cluster is not None:
            problem = self._claim_elsewhere(member, nick)
        if problem is not None:
            self.answer(member, m.Error(problem))
            return
        old = member.nick
        self.sessions.rename(member, nick, key)
        kept = KeptMember(member.token, nick, member.resume_secret)
        if self.cluster is not None:
            self.cluster.renamed(old, kept)
        else:
            self.log.keep_member(kept)
        self.outbox.report(MemberNickChanged(old, nick))
        when = self.time(now)
        self.post(lambda seq: m.NickChanged(seq, when, old, nick), None)
