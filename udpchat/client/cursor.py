"""Where the member is in the room's sequence of events (protocol.md 6.3, 7.3).

The cursor keeps the last room sequence number seen and the relay incarnation (epoch) it
belongs to, tells history (at or below WELCOME's ``seq``) from live events, and reports a gap
(``HistoryGap``) whenever numbers are skipped. It also knows whether a rejoin kept the
member's place: the same epoch, and no RESET since (the relay said our session was gone).

Invariant: ``last_seq`` only grows within one epoch; a new epoch starts it at WELCOME's ``seq``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from udpchat import events as ev
from udpchat import messages as msg

__all__ = ["Continuity", "RoomCursor"]


class Continuity(NamedTuple):
    """What a WELCOME continues: the room we followed (same epoch), and our place in it."""

    same_epoch: bool
    kept_place: bool


class RoomCursor:
    """The room sequence number, epoch and history boundary of one member."""

    __slots__ = (
        "_emit",
        "_epoch",
        "_last_seq",
        "_match_above",
        "_own_joined_seq",
        "_place_lost",
        "_welcome_seq",
    )

    def __init__(self, emit: Callable[[ev.ClientEvent], None]) -> None:
        self._emit = emit
        self._welcome_seq = 0
        self._last_seq = 0
        self._epoch: bytes | None = None  # the relay incarnation _last_seq belongs to
        self._match_above: int | None = None  # own history events above this confirm limbo
        self._own_joined_seq: int | None = None
        self._place_lost = False  # a RESET since the last WELCOME: our session is gone

    @property
    def welcomed_once(self) -> bool:
        """Whether any WELCOME was processed (every later join is a rejoin)."""
        return self._epoch is not None

    def resume_seq(self, epoch: bytes) -> int:
        """The ``last_seq`` a resume of a session of ``epoch`` carries."""
        return self._last_seq if self._epoch == epoch else 0

    def lose_place(self) -> None:
        """The relay proved it lost our session (RESET): the next WELCOME is a fresh place."""
        self._place_lost = True

    def on_welcome(self, welcome: msg.Welcome, epoch: bytes) -> Continuity:
        """Start following the room from ``welcome`` on a link of relay incarnation ``epoch``."""
        same_epoch = self._epoch is not None and self._epoch == epoch
        self._welcome_seq = welcome.seq
        # A new member's JOINED may take the number after WELCOME.seq and go to the others
        # only (protocol.md 6.3); that one missing number is not a gap.
        self._own_joined_seq = welcome.seq + 1
        if same_epoch:
            self._match_above = self._last_seq
            if welcome.first_seq > self._last_seq + 1 and welcome.seq > self._last_seq:
                end = min(welcome.first_seq - 1, welcome.seq)
                self._emit(ev.HistoryGap(self._last_seq + 1, end))
                self._last_seq = end
        else:
            self._last_seq = welcome.seq
            self._match_above = None
        self._epoch = epoch
        kept_place = same_epoch and not self._place_lost
        self._place_lost = False
        return Continuity(same_epoch, kept_place)

    def is_history(self, seq: int) -> bool:
        """Whether the room event ``seq`` is catch-up history rather than live."""
        return seq <= self._welcome_seq

    def confirms_own(self, seq: int) -> bool:
        """Whether an own history event ``seq`` may confirm a message of a previous link."""
        return self._match_above is not None and seq > self._match_above

    def advance(self, seq: int) -> None:
        """Account room event ``seq``; report the numbers skipped before it."""
        if seq <= self._last_seq:
            return
        slot = self._own_joined_seq
        if slot is not None and seq >= slot:
            self._own_joined_seq = None
            if seq > slot and self._last_seq + 1 == slot:
                self._last_seq = slot  # our own JOINED: the relay does not send it to us
        if seq > self._last_seq + 1:
            self._emit(ev.HistoryGap(self._last_seq + 1, seq - 1))
        self._last_seq = seq
