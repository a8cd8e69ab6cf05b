"""Several relays, one room: who is in it, as the relay core keeps it with a shared log.

protocol.md 6.8. A nickname is held room-wide (claimed in the shared store at admission and
rename, let go on leave and rename); a member's session is kept in the store with the relay
it is on, so that a JOIN on another relay can resume it (``Moved``); a private message to a
member of another relay is handed to that relay through the store. The relay knows the other
relays' members (``SessionTable.remote``) from the store's roster when it starts and from
their JOINED, LEFT and NICK_CHANGED events (and batches) from then on.

A store call that must happen (keeping, moving, forgetting a member, letting a nickname go)
is held while the store cannot be reached, in order with the room events held
(``udpchat.relay.cluster``); one whose answer decides a request (a claim, a private
message) raises ``LogUnavailable`` to the caller, which refuses the request.

Invariant: a member of this relay is in the room as every relay sees it. When the room was
told it left while it is here (its old relay was lost and announced as it moved here, or
another relay's LEFT was numbered after this relay's JOINED), this relay announces it again
(JOINED, after that LEFT in the room's order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from udpchat import messages as m
from udpchat import wire
from udpchat.names import nick_key
from udpchat.relay.notices import NoticeKind
from udpchat.relay.room_log import EventBuilder, KeptMember
from udpchat.relay.sessions import Dormant, Member
from udpchat.relay.shared_log import LogUnavailable, SharedLog

if TYPE_CHECKING:
    from udpchat.relay.room import Room

__all__ = ["STORE_DOWN", "STORE_REFUSAL", "Moved", "SharedMembers"]

STORE_DOWN = "the room's store cannot be reached"
# What a member is told of a post or private message the store could not take.
STORE_REFUSAL = f"{STORE_DOWN}; send it again"


@dataclass(frozen=True, slots=True)
class Moved:
    """A session of another relay (or of a relay that died) that a JOIN resumes here."""

    token: bytes
    nick: str
    key: str
    resume_secret: bytes


def _joined(when: int, nick: str) -> EventBuilder:
    return lambda seq: m.Joined(seq, when, nick)


class SharedMembers:
    """Mixin of ``Cluster``: the room's members in the shared store."""

    room: Room
    log: SharedLog
    _roster_due: bool
    # sessions moved here whose join the room never heard of: announced here (6.8)
    unannounced: set[bytes]
    # members of this relay the room was told left, -> the seq of that LEFT (inf: unknown)
    announce_again: dict[bytes, float]
    # the store's clean-ups held (never dropped), done after Cluster.held
    to_forget: dict[bytes, None]
    to_release: dict[tuple[str, bytes], None]

    if TYPE_CHECKING:  # what Cluster provides

        def failed(self) -> None: ...

        def answered(self) -> None: ...

        def retry(self) -> None: ...

        def call(self, work: Callable[[], None]) -> None: ...

        def _held_one(self) -> None: ...

        @property
        def holding(self) -> bool: ...

    def _follow(self, event: m.RoomEvent, seq: int) -> None:
        """Another relay's member came, went or was renamed: the room-wide roster."""
        sessions = self.room.sessions
        match event:
            case m.Left(nick=nick):
                self._left_elsewhere(nick, seq)
            case m.LeftBatch(nicks=nicks):
                for nick in nicks:
                    self._left_elsewhere(nick, seq)
        match event:
            case m.Joined(nick=nick):
                sessions.add_remote(nick)
            case m.JoinedBatch(joined=joined, returned=returned):
                for nick in (*joined, *returned):
                    sessions.add_remote(nick)
            case m.Left(nick=nick):
                sessions.drop_remote(nick)
            case m.LeftBatch(nicks=nicks):
                for nick in nicks:
                    sessions.drop_remote(nick)
            case m.NickChanged(old=old, new=new):
                sessions.drop_remote(old)
                sessions.add_remote(new)
            case _:
                pass

    def _left_elsewhere(self, nick: str, seq: int) -> None:
        """Another relay announced a member of this relay as left (it announced its lost
        relay's members as this one resumed one): announced again (``rejoin_due``)."""
        member = self.room.sessions.by_nick.get(nick_key(nick))
        if member is not None:
            self.announce_again[member.token] = max(self.announce_again.get(member.token, 0), seq)

    def rejoin_due(self, now: float) -> None:
        """JOINED for the members of this relay the room was told left after it knew of
        them here (a LEFT numbered below their WELCOME came before their JOINED, or was
        known when they were admitted), unless a join batch is about to name them."""
        room = self.room
        due, self.announce_again = self.announce_again, {}
        waiting: set[str] = set()
        if room.notices.kind is NoticeKind.JOIN:
            waiting = {*room.notices.joined, *room.notices.returned}
        for token, seq in due.items():
            member = room.sessions.members.get(token)
            if member is None or seq <= member.welcome_seq or member.nick in waiting:
                continue
            room.post(_joined(room.time(now), member.nick), member)

    def _read_roster(self) -> None:
        """The other relays' members, as the store has them (at start, and after an epoch
        change); tried again with the arrivals while the store cannot be reached."""
        try:
            nicks = self.log.roster()
        except LogUnavailable:
            self.failed()
            return
        self._roster_due = False
        sessions = self.room.sessions
        sessions.clear_remote()
        for nick in nicks:
            if nick_key(nick) not in sessions.by_nick:
                sessions.add_remote(nick)

    # --- membership in the store ---------------------------------------------------------------

    def claim(self, nick: str, token: bytes) -> bool:
        """May raise LogUnavailable (the join is then rejected). Held work goes first: a
        nickname let go while the store was away is free once the store answers."""
        try:
            if self.holding:
                self.retry()
            claimed = self.log.claim_nick(nick, token)
        except LogUnavailable:
            self.failed()
            self.room.stats.store_refused += 1
            raise
        self.answered()
        return claimed

    def claim_for(
        self, nick: str, token: bytes, old: object
    ) -> tuple[wire.RejectCode, str] | None:
        """Why a JOIN may not have ``nick`` room-wide, or None. A new member (or a resume
        under another nickname) claims it for its new session before ACCEPT; a resume under
        the same nickname takes the old session's claim over when admitted."""
        if isinstance(old, (Member, Dormant, Moved)) and nick_key(nick) == old.key:
            return None
        try:
            if self.claim(nick, token):
                return None
        except LogUnavailable:
            return wire.RejectCode.UNAVAILABLE, f"{STORE_DOWN}; try again in a moment"
        return wire.RejectCode.NICK_TAKEN, f"the nickname {nick} is taken"

    def find(self, token: bytes) -> Moved | None:
        try:
            kept = self.log.find_member(token)
        except LogUnavailable:
            self.failed()
            return None
        if kept is None:
            return None
        return Moved(kept.token, kept.nick, nick_key(kept.nick), kept.resume_secret)

    def admitted(self, old: object, kept: KeptMember) -> None:
        """A session admitted: kept in the store, or moved there from ``old``."""
        log = self.log
        if old is None:
            self.call(lambda: log.keep_member(kept))
            return
        assert isinstance(old, (Member, Moved))
        if isinstance(old, Moved):
            remote = self.room.sessions.remote
            if old.key not in remote:  # its relay moved it before announcing its join
                self.unannounced.add(kept.token)
            self.room.sessions.drop_remote(old.nick)
        old_token, token, late = old.token, kept.token, False

        def move() -> None:
            if log.move_member(old_token, kept):
                return
            # Its record was gone: it left, or its relay was lost and the relay that noticed
            # is announcing it as left. The room hears of it again, as a newcomer: in the
            # WELCOME's step, or (the move held while the store was away) when it is done.
            if late:
                self.announce_again[token] = math.inf
            else:
                self.unannounced.add(token)

        self.call(move)
        late = True

    def clean_up(
        self, forget: bytes | None = None, release: tuple[str, bytes] | None = None
    ) -> None:
        """Forget a session of this relay's, or let a nickname it held go: now if nothing is
        held and the store answers, else after the rest (never dropped)."""
        log = self.log
        if not self.holding:
            try:
                if release is not None:
                    log.release_nick(*release)
                    release = None
                if forget is not None:
                    log.forget_member(forget)
                self.answered()
                return
            except LogUnavailable:
                self.failed()
        if release is not None:
            self.to_release[release] = None
            self._held_one()
        if forget is not None:
            self.to_forget[forget] = None
            self._held_one()

    def left(self, nick: str, token: bytes) -> None:
        self.clean_up(forget=token, release=(nick, token))

    def renamed(self, old: str, kept: KeptMember) -> None:
        log = self.log
        self.clean_up(release=(old, kept.token))
        self.call(lambda: log.keep_member(kept))

    def send_private(self, to: str, data: bytes) -> bool:
        """May raise LogUnavailable."""
        try:
            sent = self.log.send_private(to, data)
        except LogUnavailable:
            self.failed()
            self.room.stats.store_refused += 1
            raise
        self.answered()
        return sent
