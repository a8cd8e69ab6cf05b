"""What is due when in a client session: its next timer, and the work due at a time.

``SessionTimers`` reads the deadlines the session's parts keep (the handshake's retry and
attempt deadline, the link's retransmissions and delayed ACK, the uplink's heartbeat and
silence, the quit deadline, the backoff before a rejoin, the pacer) and does what is due.
Both run after every datagram and every call, so the common state, JOINED, has a path of its
own that builds no list; the answers are the same as the general path's.
"""

from __future__ import annotations

from udpchat.client.joining import Handshake
from udpchat.client.ledger import Ledger
from udpchat.client.lifecycle import Lifecycle
from udpchat.client.states import ATTEMPTING, HANDSHAKING, LEAVING_STATES, SessionState
from udpchat.client.uplink import Uplink
from udpchat.link import ASAP

__all__ = ["SessionTimers"]

_S = SessionState
_DEAD = (_S.IDLE, _S.CLOSED)  # no timer runs


class SessionTimers:
    """The timers of one session, over the parts that keep them."""

    __slots__ = ("_handshake", "_ledger", "_life", "_machine", "_uplink")

    def __init__(
        self, life: Lifecycle, handshake: Handshake, uplink: Uplink, ledger: Ledger
    ) -> None:
        self._life = life
        self._machine = life.machine
        self._handshake = handshake
        self._uplink = uplink
        self._ledger = ledger

    def next_timer(self) -> float | None:
        """The earliest time at which ``handle_timer`` has work, or None."""
        state = self._machine.state
        uplink = self._uplink
        if uplink.out or self._handshake.out:
            return None if state in _DEAD else ASAP
        if state is _S.JOINED:  # the common case, without lists
            link = uplink.link
            assert link is not None  # JOINED is LINKED
            first = uplink.wake_at()
            timer = link.next_timer()
            if timer is not None and timer < first:
                first = timer
            pace = self._ledger.pace_at
            return pace if pace is not None and pace < first else first
        if state in _DEAD:
            return None
        deadlines: list[float | None] = [self._life.rejoin_due]
        if state in ATTEMPTING:
            deadlines.append(self._handshake.attempt_deadline)
        link = uplink.link
        if link is None:
            if state is _S.CONNECTING and self._handshake.spare_wanted:
                return ASAP  # the JOIN's ephemeral key, made while the HELLO is on its way
            if state in HANDSHAKING:
                deadlines.append(self._handshake.retry_at)
        else:
            deadlines.append(link.next_timer())
            deadlines.append(uplink.ping_due())
            deadlines.append(uplink.silent_at)
            if state in LEAVING_STATES:
                deadlines.append(self._life.quit_deadline)
            deadlines.append(self._ledger.pace_at)
        due = [d for d in deadlines if d is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Do whatever is due at ``now``: retransmit, ping, give up, rejoin, close."""
        state = self._machine.state
        if state in _DEAD:
            return
        life, uplink, handshake = self._life, self._uplink, self._handshake
        link = uplink.link
        if link is not None:
            link.handle_timer(now)
            if link.dead:
                life.lose("the relay stopped acknowledging", now, move=True)
                return
            if state is _S.JOINED and now < uplink.wake_at():
                return  # the common case, a link timer (ACK, retransmission): nothing else due
            if now >= uplink.silent_at:
                life.lose("the relay went silent", now, move=True)
                return
            quit_deadline = life.quit_deadline
            if state in LEAVING_STATES and quit_deadline is not None and now >= quit_deadline:
                life.close("left the room (the relay did not confirm)")
                return
            if now >= uplink.ping_due():
                uplink.ping(link, now)
        if state in ATTEMPTING:
            if state is _S.CONNECTING:
                handshake.prepare()
            deadline = handshake.attempt_deadline
            if deadline is not None and now >= deadline:
                life.attempt_failed(now)
                return
            retry_at = handshake.retry_at
            if link is None and retry_at is not None and now >= retry_at:
                handshake.send(now, first=False)
        else:
            rejoin_due = life.rejoin_due
            if rejoin_due is not None and now >= rejoin_due:
                life.rejoin(now)
