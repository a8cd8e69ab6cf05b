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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from udpchat import messages as m
from udpchat import wire
from udpchat.names import nick_key
from udpchat.relay.room_log import KeptMember
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


class SharedMembers:
    """Mixin of ``Cluster``: the room's members in the shared store."""

    room: Room
    log: SharedLog
    held: object
    _roster_due: bool
    # sessions moved here whose join the room never heard of: announced here (6.8)
    unannounced: set[bytes]

    if TYPE_CHECKING:  # what Cluster provides

        def failed(self) -> None: ...

        def answered(self) -> None: ...

        def retry(self) -> None: ...

        def call(self, work: Callable[[], None]) -> None: ...

    def _follow(self, event: m.RoomEvent) -> None:
        """Another relay's member came, went or was renamed: the room-wide roster."""
        sessions = self.room.sessions
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
            if self.held:
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
        old_token = old.token
        self.call(lambda: log.move_member(old_token, kept))

    def left(self, nick: str, token: bytes) -> None:
        log = self.log
        self.call(lambda: log.release_nick(nick, token))
        self.call(lambda: log.forget_member(token))

    def renamed(self, old: str, kept: KeptMember) -> None:
        log = self.log
        self.call(lambda: log.release_nick(old, kept.token))
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
