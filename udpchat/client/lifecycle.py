"""What each trigger of the session's table does (protocol.md 4, 7): the session's life cycle.

``states`` says which state a trigger leads to; ``Lifecycle`` carries out the trigger: it
asks the handshake, the uplink, the cursor, the ledger and the room view to do their part,
then fires the trigger, so the state always names what the parts hold (a link exactly in the
LINKED states, WELCOME due exactly in ACCEPTED and LEAVING_EARLY). The first join and the
rejoins differ only in what the cursor knows: before any WELCOME a lost relay or a REJECT
ends the join (or starts a new attempt within the first join's deadline); after one, the
session waits (``Backoff``) and rejoins with a resume.

Fail-over (protocol.md 6.9): with more than one relay in the ``RelayRing``, losing the relay
to silence, a dead link or SHUTDOWN, an attempt that hears nothing, a retryable REJECT, or a
relay key the trust check refuses moves the session to the next relay of the ring; the next
attempt (after the same backoff) resumes there with the same resume it would have sent to
the relay it left. A RESET does not move it: the relay answering at that address proved it
is the same identity and only lost our session, so the rejoin stays.
"""

from __future__ import annotations

from collections.abc import Callable

from udpchat import events as ev
from udpchat import messages as msg
from udpchat import wire
from udpchat.client.config import ClientConfig, Counters
from udpchat.client.cursor import RoomCursor
from udpchat.client.joining import FINAL_REJECTS, Backoff, Handshake, Refused
from udpchat.client.ledger import Ledger
from udpchat.client.relays import RelayRing, relay_label
from udpchat.client.room import RoomView
from udpchat.client.states import (
    FEEDING,
    HANDSHAKING,
    LEAVING_STATES,
    SessionState,
    StateMachine,
    Trigger,
)
from udpchat.client.uplink import Uplink
from udpchat.endpoint import Address
from udpchat.names import nick_key

__all__ = ["ROOM_REJECTS", "Lifecycle"]

# REJECTs that are the room's answer, the same from each of its relays: never a reason to try
# another one during the first join (protocol.md 6.9).
ROOM_REJECTS = FINAL_REJECTS | {wire.RejectCode.NICK_TAKEN}

_S = SessionState


class Lifecycle:
    """The effects of the session's triggers, on the parts the session owns."""

    def __init__(
        self,
        config: ClientConfig,
        handshake: Handshake,
        uplink: Uplink,
        cursor: RoomCursor,
        ledger: Ledger,
        room: RoomView,
        counters: Counters,
        emit: Callable[[ev.ClientEvent], None],
        ring: RelayRing,
    ) -> None:
        self._config = config
        self.machine = StateMachine()
        self._handshake = handshake
        self._backoff = Backoff(config.max_reconnect_delay)
        self._uplink = uplink
        self._cursor = cursor
        self._ledger = ledger
        self._room = room
        self._counters = counters
        self._emit = emit
        self._ring = ring
        self._attempt_started = 0.0
        self._linked_relay: Address | None = None  # the relay of the last link adopted
        self.refusal: str | None = None  # what the last relay that refused the first join said
        self.quit_deadline: float | None = None

    @property
    def state(self) -> SessionState:
        return self.machine.state

    @property
    def rejoin_due(self) -> float | None:
        return self._backoff.due if self.state is _S.RECONNECTING else None

    # --- joining ------------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        self.machine.fire(Trigger.CONNECT)
        self._handshake.join_deadline = now + self._config.join_timeout
        self._begin_attempt(now)

    def rejoin(self, now: float) -> None:
        """The wait in RECONNECTING is over: a new attempt."""
        self._backoff.due = None
        self.machine.fire(Trigger.RETRY)
        self._begin_attempt(now)

    def _begin_attempt(self, now: float) -> None:
        """A fresh attempt with its own deadline (the state is CONNECTING already)."""
        first_join = not self._cursor.welcomed_once
        # A rejoin retransmits on the last link's round trip (RFC 9002 6.2.2), the first
        # join on the default schedule.
        last_rtt = None if first_join else self._uplink.last_rtt
        self._handshake.start_attempt(
            self._room.nick, now, self._config.join_timeout, first_join, last_rtt
        )
        self._attempt_started = now
        if self._ring.many:  # a relay that does not answer HELLO soon is passed over
            self._handshake.shorten_attempt(now + self._config.failover_wait)

    def on_challenge(self, challenge: wire.Challenge, now: float) -> None:
        if self.state not in HANDSHAKING or challenge.nonce != self._handshake.nonce:
            self._counters.wrong_session += 1
            return
        try:
            started = self._handshake.on_challenge(challenge, self.state is _S.JOINING, now)
        except Refused as refused:
            self._refused(refused.reason, now)
            return
        if started:
            self.machine.fire(Trigger.CHALLENGE)
            if self._ring.many:  # it answers: the attempt gets its whole time again
                self._handshake.extend_attempt(self._attempt_started + self._config.join_timeout)

    def _refused(self, reason: str, now: float) -> None:
        """The CHALLENGE names a relay (or room) we must not join: the end of the session,
        unless the list has another relay, in which case this one is left out for good."""
        if not self._ring.refuse_current():
            self.close(reason)
            return
        self._emit(ev.ErrorReported(reason))
        if not self._cursor.welcomed_once:
            self._next_first_attempt(now)
            return
        self._move("its key was refused", now)

    def on_accept(self, accept: wire.Accept, now: float) -> None:
        link = self._uplink.link
        if link is not None and accept.token == link.token:
            return  # the same ACCEPT again, for a retransmitted JOIN
        if self.state is not _S.JOINING:
            self._counters.unexpected += 1
            return
        # The last link's round trip is a fallback hint only for the relay it measured.
        same_relay = self._ring.current == self._linked_relay
        last_srtt = self._uplink.last_stats.srtt if same_relay else 0.0
        opened = self._handshake.on_accept(accept, now, last_srtt)
        if opened is None:
            return  # counted
        payload, keys, hint = opened
        self._uplink.adopt(accept.token, self._config.link, hint, keys, payload, now)
        self._linked_relay = self._ring.current
        self.machine.fire(Trigger.ACCEPT)

    def on_busy(self, busy: wire.Busy, now: float) -> None:
        """protocol.md 4.3: the relay answers our JOIN with "later": wait as asked."""
        if self.state is not _S.JOINING:
            self._counters.unexpected += 1
            return
        self._handshake.on_busy(busy, now)

    def on_reject(self, reject: wire.Reject, now: float) -> None:
        """protocol.md 4: a REJECT is ours only if it is bound to what we sent in this
        attempt. Anything else may be forged by anyone who knows the relay's address, so it
        never ends a join. (Someone on the path sees the nonce and can forge a bound REJECT;
        dropping our datagrams would end the join as well.)"""
        if self.state not in HANDSHAKING:
            self._counters.unexpected += 1
            return
        if not self._handshake.bound(reject):
            return
        code, reason = reject.code, reject.reason
        if not self._cursor.welcomed_once and self._ring.many and code not in ROOM_REJECTS:
            # protocol.md 6.9: another relay of the list may have room (or reach its store).
            self.refusal = reason or f"refused with code {code}"
            self._move(reason or f"it refused us (code {code})", now)
            return
        final = not self._cursor.welcomed_once or code in FINAL_REJECTS
        if code == wire.RejectCode.NICK_TAKEN and not final:
            nick = self._room.nick
            candidate = self._handshake.suffixed_nick(nick)
            if candidate is not None:
                self._emit(ev.ErrorReported(f"the nickname {nick} is taken; trying {candidate}"))
                self._room.nick = candidate
                self.machine.fire(Trigger.RETRY)
                self._begin_attempt(now)
                return
            final = True
        if final:
            self._emit(ev.JoinRejected(code, reason))
            self.close(reason or "the relay refused to let us in")
            return
        if self._ring.many:
            self._move(reason or f"it refused the rejoin (code {code})", now)
            return
        self._emit(ev.ErrorReported(reason or f"the relay refused the rejoin (code {code})"))
        self._schedule_attempt(now, immediate=False)

    def on_welcome(self, welcome: msg.Welcome, now: float) -> None:
        link = self._uplink.link
        assert link is not None
        if self.state is _S.LEAVING_EARLY:
            self.machine.fire(Trigger.WELCOME)  # we quit before it came: nothing to set up
            return
        rejoin = self._cursor.welcomed_once
        # the list we held, when it was a whole one (protocol.md 6.7: a paged room's is not)
        before = self._room.members if rejoin and not self._room.paged else None
        old_nick = self._room.nick
        continuity = self._cursor.on_welcome(welcome, self._uplink.epoch)
        # WELCOME.resumed counts messages of the stream named in our resume; it applies to
        # our log only if that is the stream the log was sent on.
        received = 0
        if continuity.same_epoch and self._handshake.resumes(self._ledger.log_token):
            received = welcome.resumed
        self._room.welcome(welcome)
        self._handshake.welcomed()
        self._backoff.reset()
        self._ledger.rebase(received, link)
        self.machine.fire(Trigger.WELCOME)
        if rejoin:
            self._counters.reconnects += 1
        room = self._room
        lost = rejoin and not continuity.same_epoch
        members = room.members
        size = room.room_size if room.room_size is not None else len(members)
        kept = continuity.kept_place
        self._emit(ev.Welcomed(room.nick, members, kept, lost, size, head=welcome.seq))
        if lost and before is not None and not room.paged:
            self._summarize_absence(before, members, old_nick)
        self.feed(now)

    def _summarize_absence(
        self, before: tuple[str, ...], after: tuple[str, ...], old_nick: str
    ) -> None:
        """A room that started afresh has no history of who came and went while we were
        away: say the difference between the lists, ourselves aside (renamed or not)."""
        old = {nick_key(n): n for n in before}
        new = {nick_key(n): n for n in after}
        old.pop(nick_key(old_nick), None)
        new.pop(nick_key(self._room.nick), None)
        left = tuple(n for k, n in old.items() if k not in new)
        joined = tuple(n for k, n in new.items() if k not in old)
        if left or joined:
            self._emit(ev.MembersChanged(left, joined))

    # --- chatting and leaving -----------------------------------------------------------------

    def feed(self, now: float) -> None:
        """Queued messages to the link, in the states that send them."""
        if self.machine.state in FEEDING:
            self._ledger.feed(self._uplink.link, now)
        else:
            self._ledger.pace_at = None

    def quit(self, reason: str, now: float) -> None:
        if self._uplink.link is None:
            self.close("left the room")
            return
        self._ledger.queue_quit(msg.Quit(reason), welcomed=self.state is _S.JOINED)
        self.machine.fire(Trigger.QUIT)
        self.quit_deadline = now + self._config.quit_timeout
        self.feed(now)

    # --- losing and rejoining -----------------------------------------------------------------

    def on_reset(self, reset: wire.Reset, now: float) -> None:
        if self._uplink.reset_is_ours(reset):
            self._cursor.lose_place()  # whatever the epoch, our place is gone
            self.lose("the relay lost our session", now, immediate=True)

    def on_shutdown(self, message: msg.Shutdown, now: float) -> None:
        link = self._uplink.link
        if link is not None:  # the relay waits for this ACK before it stops
            link.acknowledge_now()
            self._uplink.out.extend(link.datagrams_to_send(now))
        text = message.text or "no reason given"
        self.lose(f"the relay is shutting down: {text}", now, move=True)

    def _remember_resume(self) -> None:
        """The current link will be gone: the next JOIN asks to resume its session."""
        link = self._uplink.link
        if link is not None:
            epoch = self._uplink.epoch
            self._handshake.remember_resume(epoch, link.token, self._cursor.resume_seq(epoch))

    def lose(self, reason: str, now: float, immediate: bool = False, move: bool = False) -> None:
        """The relay is gone (silence, dead link, RESET, SHUTDOWN): rejoin or close; with
        ``move`` and another relay to go to, rejoin there."""
        if self.state in LEAVING_STATES:
            self.close("left the room")
            return
        self._remember_resume()
        self._uplink.retire()
        if not self._cursor.welcomed_once:
            # Lost during the first join: try again within the same join deadline.
            if move and self._ring.many:
                self._next_first_attempt(now)
                return
            self.machine.fire(Trigger.RETRY)
            self._begin_attempt(now)
            return
        if move and self._ring.many and self._config.reconnect:
            self._move(reason, now)
            return
        self._emit(ev.ConnectionLost(reason, self._silent_for(now)))
        if not self._config.reconnect:
            self.close(reason)
            return
        self._schedule_attempt(now, immediate)

    def _move(self, reason: str, now: float) -> None:
        """protocol.md 6.9: leave the current relay for the next one of the list; the next
        attempt resumes there, at once when it is the first since the last welcome (another
        relay has not been asked yet: waiting would only lengthen the outage), after the
        usual backoff otherwise. One event says it all."""
        left = self._ring.current
        silent_for = self._silent_for(now)
        to = self._ring.advance()
        self._counters.moves += 1
        self._uplink.retire()
        delay = self._backoff.schedule(now, immediate=self._backoff.attempt == 0)
        self._handshake.stop()
        self.machine.fire(Trigger.LOSE)
        attempt = self._backoff.attempt
        labels = relay_label(left), relay_label(to)
        self._emit(ev.RelayMoved(*labels, reason, attempt, delay, silent_for))

    def _silent_for(self, now: float) -> float:
        """Seconds since the relay was last heard: a user counts an outage from there."""
        return round(max(now - self._uplink.last_heard, 0.0), 3)

    def _next_first_attempt(self, now: float) -> None:
        """The first join tries the next relay of the list at once (within its deadline)."""
        self._uplink.retire()
        self._ring.advance()
        self._counters.moves += 1
        self.machine.fire(Trigger.RETRY)
        self._begin_attempt(now)

    def _schedule_attempt(self, now: float, immediate: bool) -> None:
        self._uplink.retire()
        delay = self._backoff.schedule(now, immediate)
        self._handshake.stop()
        self.machine.fire(Trigger.LOSE)
        self._emit(ev.Reconnecting(self._backoff.attempt, delay))

    def attempt_failed(self, now: float) -> None:
        """The attempt's deadline passed before WELCOME."""
        if not self._cursor.welcomed_once:
            join_deadline = self._handshake.join_deadline
            if self._ring.many and join_deadline is not None and now < join_deadline:
                self._next_first_attempt(now)
                return
            reason = "the relay does not answer (check the address and port)"
            if self._ring.many:
                reason = "no relay of the list answers (check the addresses and ports)"
                if self.refusal is not None:
                    reason = f"no relay of the list let us in; the last one said: {self.refusal}"
            unverified = self._handshake.unverified
            if unverified is not None:
                reason += f"; an unverifiable reply said: {unverified}"
            self.close(reason)
            return
        self._remember_resume()  # ACCEPT came but WELCOME did not: resume that session next
        if self._ring.many:
            self._move("it did not answer", now)
            return
        self._schedule_attempt(now, immediate=False)

    def unreachable(self, reason: str, now: float) -> bool:
        """The first join's relay is refused by the network: the next relay of the list at
        once, or the end (True) when every one was refused."""
        if self._ring.unreachable():
            self.attempt_failed(now)
            return self.machine.state is _S.CLOSED
        self.close(reason)
        return True

    def close(self, reason: str) -> None:
        self._ledger.close()
        self._uplink.retire()
        self.machine.fire(Trigger.CLOSE)
        self._emit(ev.Closed(reason))
