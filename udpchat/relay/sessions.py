"""The session table: members by token, nickname and pending JOIN, their lifecycle, timers.

Members are kept by session token, not by address (an address can change, protocol.md 7.3).
Each member's lifecycle is a ``MemberState`` with an explicit transition table; a member is in
the table exactly while it is live (ACCEPTED, ACTIVE or VALIDATING). Timers live in a heap of
(deadline, order, token), so that idle members cost nothing between their own deadlines (no
polling of every member on every tick); a stale entry is skipped when it comes up.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from udpchat.endpoint import Address
from udpchat.errors import UsageError
from udpchat.link import Link
from udpchat.messages import MAX_MEMBERS_LISTED, MAX_MESSAGE_SIZE
from udpchat.names import nick_key
from udpchat.netblock import address_key, prefix_key
from udpchat.ratelimit import TokenBucket
from udpchat.relay.config import (
    AMPLIFICATION_FACTOR,
    INITIAL_ANSWER_CREDIT,
    LIST_CREDIT_FACTOR,
    MAX_ANSWER_CREDIT,
)

__all__ = [
    "LIVE", "TRANSITIONS", "Dormant", "Member", "MemberState", "MemberStateError",
    "SessionTable", "members_fitting", "sending_blocked",
]


class MemberState(Enum):
    ACCEPTED = "accepted"  # ACCEPT sent; nothing heard on the session yet (a JOIN may repeat)
    ACTIVE = "active"  # heard from, at an address that proved it receives our datagrams
    VALIDATING = "validating"  # moved to a new address, not yet validated (protocol.md 7.3)
    CLOSING = "closing"  # quit: out of the room, its last ACK still to be flushed
    GONE = "gone"  # forgotten: timed out, dropped, replaced by a resume, or shut down


_S = MemberState
TRANSITIONS: dict[MemberState, frozenset[MemberState]] = {
    # A QUIT or a move arrives on the session, which makes the member ACTIVE first.
    _S.ACCEPTED: frozenset({_S.ACTIVE, _S.GONE}),
    _S.ACTIVE: frozenset({_S.VALIDATING, _S.CLOSING, _S.GONE}),
    # Moved again before the first move was validated: a new challenge, a new budget.
    _S.VALIDATING: frozenset({_S.ACTIVE, _S.VALIDATING, _S.CLOSING, _S.GONE}),
    _S.CLOSING: frozenset({_S.GONE}),
    _S.GONE: frozenset(),
}
LIVE = frozenset({_S.ACCEPTED, _S.ACTIVE, _S.VALIDATING})


_ACCEPTED, _ACTIVE, _VALIDATING = _S.ACCEPTED, _S.ACTIVE, _S.VALIDATING


class MemberStateError(UsageError):
    """A member was asked to take a step its lifecycle does not allow (a relay bug)."""


@dataclass(slots=True, eq=False)
class Member:
    token: bytes
    nick: str
    key: str  # nick_key(nick): what nicknames are unique by
    addr: Address
    link: Link
    last_heard: float
    bucket: TokenBucket
    join: tuple[Address, bytes] | None  # (address, nonce) while ACCEPTED
    accept: bytes  # the ACCEPT, sent again as is for a retransmitted JOIN (while ACCEPTED)
    resume_secret: bytes  # protocol.md 4.2: what a resume of this session must prove
    state: MemberState = MemberState.ACCEPTED
    received_unvalidated: int = 0  # bytes from an unvalidated address
    sent_unvalidated: int = 0  # ... and to it
    # The PATH_CHALLENGE's data, from a move until the new address echoes it: set exactly
    # while the address is unvalidated (VALIDATING, or CLOSING after it).
    path_data: bytes | None = None
    scheduled: float = math.inf
    flood_told: bool = False  # the flood refusal of this burst was given in words
    list_told: bool = False  # likewise for a member list refused for want of credit
    oversized_answered: int = 0  # the link's oversized messages already answered as such
    # protocol.md 6.5: bytes of member lists the member may still be sent
    answer_credit: float = INITIAL_ANSWER_CREDIT
    # protocol.md 6.8: the seq its WELCOME said, in a room shared by several relays (-1:
    # a relay of its own, whose fan-out never holds an event a WELCOME counted)
    welcome_seq: int = -1

    @property
    def validated(self) -> bool:
        """Its address proved it receives our datagrams: no PATH_CHALLENGE is outstanding."""
        return self.path_data is None

    @property
    def live(self) -> bool:
        # the same as ``state in LIVE``, without hashing an Enum (a Python-level __hash__):
        # this is asked several times per datagram
        state = self.state
        return state is _ACTIVE or state is _ACCEPTED or state is _VALIDATING

    def advance(self, state: MemberState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise MemberStateError(f"a member cannot go from {self.state.value} to {state.value}")
        self.state = state


@dataclass(slots=True, eq=False)
class Dormant:
    """A member of the room when the relay last stopped, not back yet (protocol.md 6.6): it
    holds its nickname and can resume its place until ``expires``."""

    token: bytes
    nick: str
    key: str
    resume_secret: bytes
    expires: float


def sending_blocked(member: Member) -> bool:
    """Sending to the member waits for its address to be validated (protocol.md 7.3: out of
    the amplification budget of an unvalidated address)."""
    return member.path_data is not None and (
        AMPLIFICATION_FACTOR * member.received_unvalidated <= member.sent_unvalidated
    )


def members_fitting(nicks: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """As many nicknames, sorted, as fit in one message (a huge room lists a prefix)."""
    nicks = sorted(nicks)[:MAX_MEMBERS_LISTED]
    budget = MAX_MESSAGE_SIZE - 256
    out: list[str] = []
    for nick in nicks:
        budget -= len(nick.encode()) + 3
        if budget < 0:
            break
        out.append(nick)
    return tuple(out)


class SessionTable:
    """Live members and their indexes, address counts, timers and flush order."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.members: dict[bytes, Member] = {}
        self.by_nick: dict[str, Member] = {}
        self.by_join: dict[tuple[Address, bytes], Member] = {}
        # protocol.md 6.5: members per host and per network
        self.per_host: dict[str, int] = {}
        self.per_network: dict[str, int] = {}
        self.timers: list[tuple[float, int, bytes]] = []
        self._timer_order = 0
        # Members with something to flush, in order; a new member goes first, so its
        # WELCOME is not queued behind the fan-out of its own JOINED.
        self.dirty: dict[Member, None] = {}
        # Members that quit: flushed once more (the ACK of their QUIT), then GONE.
        self.closing: list[Member] = []
        # Members a flush cut short by its ``limit`` left dirty: they keep their place.
        self.carried: set[Member] = set()
        # Every nickname in the room (live, dormant, on other relays), kept sorted as members
        # come and go: in a room of a thousand, sorting it again at every join cost more than
        # the rest of the room's part of a join; its tuple, and (that tuple, the prefix of it that
        # fits one message), made only when asked for.
        self._sorted: list[str] = []
        self._listed: tuple[str, ...] | None = None
        self._fitting: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        # Members from before a restart, by token and by nickname key, soonest expiry first.
        self.dormant: dict[bytes, Dormant] = {}
        self.dormant_nicks: dict[str, Dormant] = {}
        self._dormant_expiry: float | None = None  # the soonest, cached: timers ask often
        # protocol.md 6.8: the members of the other relays of a shared room, by nick key
        self.remote: dict[str, str] = {}

    # --- the table ----------------------------------------------------------------------------

    def add(self, member: Member) -> None:
        assert member.join is not None
        self.members[member.token] = member
        self.count_address(member.addr, +1)
        self.by_nick[member.key] = member
        self.by_join[member.join] = member
        self._list(member.nick)

    def rename(self, member: Member, nick: str, key: str) -> None:
        del self.by_nick[member.key]
        self._unlist(member.nick)
        member.nick, member.key = nick, key
        self.by_nick[key] = member
        self._list(nick)

    def _list(self, nick: str) -> None:
        bisect.insort(self._sorted, nick)
        self._listed = None

    def _unlist(self, nick: str) -> None:
        at = bisect.bisect_left(self._sorted, nick)
        if at < len(self._sorted) and self._sorted[at] == nick:
            del self._sorted[at]
        self._listed = None

    def heard(self, member: Member, size: int, now: float) -> None:
        """An authenticated, new datagram of ``size`` bytes arrived on the session."""
        member.link.stats.bytes_received += size  # the link's count_received
        member.last_heard = now
        credit = member.answer_credit + LIST_CREDIT_FACTOR * size
        member.answer_credit = credit if credit < MAX_ANSWER_CREDIT else MAX_ANSWER_CREDIT
        if member.state is MemberState.ACCEPTED:  # the handshake is over: no JOIN repeats
            assert member.join is not None
            self.by_join.pop(member.join, None)
            member.join = None
            member.accept = b""  # no JOIN is answered with it any more: not kept for good
            member.advance(MemberState.ACTIVE)

    def forget(self, member: Member, closing: bool = False) -> None:
        """Drop a session from every table, without telling anyone; one that quit is
        CLOSING until its last flush."""
        if self.members.pop(member.token, None) is not None:
            self.count_address(member.addr, -1)
            self._unlist(member.nick)
        if self.by_nick.get(member.key) is member:
            del self.by_nick[member.key]
        if member.join is not None:
            self.by_join.pop(member.join, None)
        self.dirty.pop(member, None)
        member.link.release_buffers()  # its bytes go back to the shared receive budget
        if closing:
            member.advance(MemberState.CLOSING)
            self.closing.append(member)
        else:
            member.advance(MemberState.GONE)

    def nicks_in_order(self) -> Iterator[str]:
        """Every nickname in the room, sorted, read in place: for a caller that stops after
        a page, since copying a thousand names at every join cost more than the page. A live
        view: read it before the room changes."""
        return iter(self._sorted)

    def sorted_nicks(self) -> tuple[str, ...]:
        """Every nickname in the room, sorted (what MEMBERS_PAGE pages through); rebuilt
        only when the room changed: members not back yet since a restart are in it."""
        if self._listed is None:
            self._listed = tuple(self._sorted)
        return self._listed

    def nick_list(self) -> tuple[str, ...]:
        """The sorted member list for WELCOME and MEMBERS: as much of it as fits one message."""
        every = self.sorted_nicks()
        if self._fitting is None or self._fitting[0] is not every:
            self._fitting = (every, members_fitting(every))
        return self._fitting[1]

    def holder(self, key: str) -> Member | Dormant | None:
        """Who holds the nickname ``key``: a live member, or one not back yet."""
        return self.by_nick.get(key) or self.dormant_nicks.get(key)

    # --- members of the other relays of a shared room ----------------------------------------

    def add_remote(self, nick: str) -> None:
        """A member of another relay; not one of ours (a join another relay announced late,
        of a member that has moved here since)."""
        key = nick_key(nick)
        if key in self.by_nick:
            return
        old = self.remote.get(key)
        if old is not None:
            self._unlist(old)
        self.remote[key] = nick
        self._list(nick)

    def drop_remote(self, nick: str) -> None:
        old = self.remote.pop(nick_key(nick), None)
        if old is not None:
            self._unlist(old)

    def clear_remote(self) -> None:
        for nick in self.remote.values():
            self._unlist(nick)
        self.remote.clear()

    # --- members from before a restart ------------------------------------------------------

    def add_dormant(self, dormant: Dormant) -> None:
        self.dormant[dormant.token] = dormant
        self.dormant_nicks[dormant.key] = dormant
        self._list(dormant.nick)
        self._dormant_expiry = None

    def wake(self, dormant: Dormant) -> None:
        """``dormant`` resumed or expired: it no longer holds anything."""
        del self.dormant[dormant.token]
        if self.dormant_nicks.get(dormant.key) is dormant:
            del self.dormant_nicks[dormant.key]
        self._unlist(dormant.nick)
        self._dormant_expiry = None

    def next_dormant_expiry(self) -> float | None:
        if self._dormant_expiry is None and self.dormant:
            self._dormant_expiry = min(d.expires for d in self.dormant.values())
        return self._dormant_expiry

    def dormant_due(self, now: float) -> list[Dormant]:
        return [d for d in self.dormant.values() if d.expires <= now]

    def count_address(self, addr: Address, step: int) -> None:
        for table, key in (
            (self.per_host, address_key(addr[0])),
            (self.per_network, prefix_key(addr[0])),
        ):
            count = table.get(key, 0) + step
            if count > 0:
                table[key] = count
            else:
                table.pop(key, None)

    # --- flush order ----------------------------------------------------------------------

    def mark(self, member: Member) -> None:
        """The member has something to flush."""
        self.dirty[member] = None

    def mark_first(self, member: Member) -> None:
        self.dirty = {member: None, **self.dirty}

    def mark_last(self, member: Member) -> None:
        """The member has something to flush, after everyone marked so far: the sender of
        what was just handled, whose answer (a POSTED, an ACK) is less urgent than the
        fan-out that answer confirms."""
        dirty = self.dirty
        if member in self.carried:
            return  # waiting since a flush cut short: moving it back could starve it
        dirty.pop(member, None)
        dirty[member] = None

    # --- timers ---------------------------------------------------------------------------

    def reschedule(self, member: Member) -> None:
        """Arm the member's next deadline (``deadline``). Only an earlier deadline is
        pushed; one that moved later (an ACK emptied the flight) is found stale, and pushed
        again at its true time, when it comes to the top of the heap (``next_deadline``,
        ``due``): no wake-up for a timer that no longer has work."""
        deadline = self.deadline(member)
        if deadline < member.scheduled:
            member.scheduled = deadline
            self._timer_order += 1
            heapq.heappush(self.timers, (deadline, self._timer_order, member.token))

    def deadline(self, member: Member) -> float:
        """The member's next deadline as its state says now: its link's timer, unless
        sending is blocked (an unvalidated address out of budget), and its expiry."""
        expiry = member.last_heard + self.timeout
        link_timer = member.link.next_timer()
        if link_timer is None or link_timer >= expiry:
            return expiry
        if member.path_data is not None and sending_blocked(member):  # validated: not
            return expiry
        return link_timer

    def _postpone(self, member: Member, deadline: float) -> None:
        """Replace the top of the heap, the member's stale entry, by its true deadline."""
        member.scheduled = deadline
        self._timer_order += 1
        heapq.heapreplace(self.timers, (deadline, self._timer_order, member.token))

    def next_deadline(self, horizon: float = math.inf) -> float | None:
        """The earliest deadline, checked against its member's state if it comes before
        ``horizon``. One beyond it is returned as armed, maybe stale (early, never late):
        checking it now would postpone it at every datagram its member sends, as a heard
        member's expiry moves on (a thousand idle members' heartbeats each moved the top of
        the heap, once per heartbeat instead of once per timeout). The caller passes
        ``now`` plus the heartbeat: a live member sends within it, so the deadline is
        checked again before it comes, and only the rare one left stale wakes the relay
        for nothing (``due`` then postpones it)."""
        timers = self.timers
        members = self.members
        while timers:
            deadline, _, token = timers[0]
            member = members.get(token)
            if member is None or member.scheduled != deadline:
                heapq.heappop(timers)
                continue
            if deadline > horizon:
                return deadline
            actual = self.deadline(member)
            if actual <= deadline:
                return deadline
            self._postpone(member, actual)
        return None

    def due(self, now: float) -> Iterator[Member]:
        """Members whose deadline has come, each disarmed as it is yielded."""
        timers = self.timers
        members = self.members
        while timers and timers[0][0] <= now:
            deadline, _, token = timers[0]
            member = members.get(token)
            if member is None or member.scheduled != deadline:
                heapq.heappop(timers)
                continue
            actual = self.deadline(member)
            if actual > now:  # stale: its work was done meanwhile
                self._postpone(member, actual)
                continue
            heapq.heappop(timers)
            member.scheduled = math.inf
            yield member

    def expired(self, member: Member, now: float) -> bool:
        return now >= member.last_heard + self.timeout  # the same sum as reschedule's
