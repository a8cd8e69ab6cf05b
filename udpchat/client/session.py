"""The client session, sans I/O: one member's session with one relay, across links.

A ``ClientSession`` owns one ``Link`` at a time and coordinates the parts that outlive it: the
handshake (``joining``), the member's own messages (``ledger``), its place in the room
(``cursor``) and the heartbeat clocks (``liveness``). Every change of state is a trigger of
the table in ``states``. Like the link it never touches a socket, a clock or a random source
of its own: the runtime feeds it datagrams with their source address and ``now``, drains
``datagrams_to_send`` (each with its destination, the relay) and ``events``, and calls
``handle_timer`` at ``next_timer``; randomness comes from the injected ``rng``. It is an
``udpchat.endpoint.Endpoint``, so the simulator drives it as it drives the relay core, and
every behaviour of protocol.md sections 4, 6 and 7 is testable on a virtual clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from udpchat import events as ev
from udpchat import messages as msg
from udpchat import wire
from udpchat.client.config import (
    ClientConfig,
    ClientStats,
    Counters,
    LocalProtocolError,
    Trust,
    trust_any,
)
from udpchat.client.cursor import RoomCursor
from udpchat.client.joining import FINAL_REJECTS, Backoff, Handshake, Refused
from udpchat.client.ledger import Ledger
from udpchat.client.room import RoomView
from udpchat.client.states import (
    HANDSHAKING,
    LEAVING_STATES,
    LINKED,
    SessionState,
    StateMachine,
    Trigger,
)
from udpchat.client.uplink import Uplink
from udpchat.endpoint import Address
from udpchat.names import nick_error
from udpchat.reliability import ASAP, Link
from udpchat.seal import PskDeriver

__all__ = ["ClientSession"]

_S = SessionState
# The states in which the user may queue messages and quit.
_OPEN = frozenset({_S.IDLE, _S.CONNECTING, _S.JOINING, _S.ACCEPTED, _S.JOINED, _S.RECONNECTING})
# The states whose attempt deadline counts: from HELLO until WELCOME.
_ATTEMPTING = frozenset({_S.CONNECTING, _S.JOINING, _S.ACCEPTED})
# The states in which queued messages go to the link (WELCOME came, or only QUIT is left).
_FEEDING = frozenset({_S.JOINED, *LEAVING_STATES})
# The states in which the first message on the link must be WELCOME.
_WELCOME_DUE = frozenset({_S.ACCEPTED, _S.LEAVING_EARLY})


class ClientSession:
    """One member's session with one relay, across as many links as it takes."""

    def __init__(
        self,
        config: ClientConfig,
        rng: Callable[[int], bytes],
        now: float,
        room_key: PskDeriver | None = None,
        wall_offset: float = 0.0,
        trust: Trust | None = None,
    ) -> None:
        self.config = config
        self._rng = rng
        self._wall_offset = wall_offset
        self._machine = StateMachine()
        self._events: list[ev.ClientEvent] = []
        self._counters = Counters()
        self._handshake = Handshake(
            rng, room_key, trust if trust is not None else trust_any, self._counters, now
        )
        self._backoff = Backoff(config.max_reconnect_delay)
        self._uplink = Uplink(self._counters, config.relay_silence, now)
        self._cursor = RoomCursor(self._emit)
        self._ledger = Ledger(config, self._emit, now)
        self._room = RoomView(
            config.nick, self._cursor, self._ledger, self._counters, self._emit, wall_offset
        )
        self._quit_deadline: float | None = None

    # --- state --------------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._machine.state

    def _require(self, allowed: Iterable[SessionState], doing: str) -> None:
        if self.state not in allowed:
            raise LocalProtocolError(f"cannot {doing} while {self.state.value}")

    @property
    def nick(self) -> str:
        """The nickname: the one asked for until WELCOME, then the relay's word for it."""
        return self._room.nick

    @property
    def members(self) -> tuple[str, ...]:
        return self._room.members

    @property
    def _link(self) -> Link | None:
        return self._uplink.link

    @property
    def pending(self) -> int:
        """Own SAY and ACTION messages the relay has neither posted nor refused yet."""
        return self._ledger.pending

    @property
    def idle(self) -> bool:
        """Joined, with nothing queued, unacknowledged or awaiting the relay's answer."""
        link = self._link
        return self.state is _S.JOINED and link is not None and link.idle and self._ledger.settled

    @property
    def stats(self) -> ClientStats:
        return self._uplink.stats()

    def events(self) -> list[ev.ClientEvent]:
        """Drain the events that happened since the last call."""
        out, self._events = self._events, []
        return out

    def _emit(self, event: ev.ClientEvent) -> None:
        self._events.append(event)

    # --- user actions -------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Start the first join: send HELLO."""
        self._machine.fire(Trigger.CONNECT)
        self._handshake.join_deadline = now + self.config.join_timeout
        self._begin_attempt(now)

    def say(self, text: str, now: float) -> int:
        """Send a chat line; return the local id its MessagePending and answer will carry."""
        return self._post(msg.Say(text, self._new_msgid()), now)

    def action(self, text: str, now: float) -> int:
        """Send an action (``/me``); same life cycle as ``say``."""
        return self._post(msg.Action(text, self._new_msgid()), now)

    def private(self, to: str, text: str, now: float) -> int:
        """Send a private message; return the request id an ``ErrorReported`` answer names."""
        self._require(_OPEN, "send a private message")
        error = nick_error(to) or msg.text_error(text)
        if error is not None:
            raise ValueError(error)
        return self._request(msg.PrivateSend(to, text, self._new_msgid()), now)

    def change_nick(self, nick: str, now: float) -> int:
        """Ask for a new nickname; return the request id, as ``private`` does."""
        self._require(_OPEN, "change nickname")
        error = nick_error(nick)
        if error is not None:
            raise ValueError(error)
        return self._request(msg.NickRequest(nick), now)

    def who(self, now: float) -> int:
        """Ask who is here; return the request id, as ``private`` does."""
        self._require(_OPEN, "ask who is here")
        return self._request(msg.Who(), now)

    def unreachable(self, reason: str) -> bool:
        """The network says nothing listens at the relay's address (ICMP port unreachable).

        During the first join that is final, and waiting out the join timeout would only
        keep the user waiting: the session closes with ``reason`` and True is returned. Once
        joined, the relay may be restarting on that port, so rejoining goes on (False).
        """
        if self._cursor.welcomed_once or self.state in (_S.IDLE, _S.CLOSED):
            return False
        self._close(reason)
        return True

    def quit(self, reason: str, now: float) -> None:
        """Leave the room: QUIT on the link if there is one, then CLOSED."""
        self._require(_OPEN, "quit")
        size = len(reason.encode("utf-8", "surrogatepass"))
        if size > wire.MAX_REASON_BYTES:
            raise ValueError(
                f"quit message is {size} bytes; the limit is {wire.MAX_REASON_BYTES} bytes"
            )
        if self._link is None:
            self._close("left the room")
            return
        self._ledger.queue_quit(msg.Quit(reason), welcomed=self.state is _S.JOINED)
        self._machine.fire(Trigger.QUIT)
        self._quit_deadline = now + self.config.quit_timeout
        self._feed(now)

    def _new_msgid(self) -> bytes:
        """protocol.md 6.1: the id that lets the relay recognise this request if it is sent
        again on a new session, so that it is posted once whatever the rejoin lost."""
        msgid = self._rng(msg.MSGID_SIZE)
        if len(msgid) != msg.MSGID_SIZE:
            raise ValueError(f"rng returned {len(msgid)} bytes, not {msg.MSGID_SIZE}")
        return msgid

    def _post(self, message: msg.Say | msg.Action, now: float) -> int:
        self._require(_OPEN, "send a message")
        error = msg.text_error(message.text)
        if error is not None:
            raise ValueError(error)
        local_id = self._ledger.next_id()
        self._ledger.enqueue(message, local_id=local_id)
        self._feed_if_joined(now)
        action = isinstance(message, msg.Action)
        self._emit(ev.MessagePending(local_id, message.text, action=action))
        return local_id

    def _request(self, message: msg.ClientMessage, now: float) -> int:
        request = self._ledger.next_id()
        self._ledger.enqueue(message, request=request)
        self._feed_if_joined(now)
        return request

    def _feed_if_joined(self, now: float) -> None:
        if self.state is _S.JOINED:
            self._feed(now)

    def _feed(self, now: float) -> None:
        if self.state in _FEEDING:
            self._ledger.feed(self._link, now)
        else:
            self._ledger.pace_at = None

    # --- receiving ----------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram; garbage, and anything not from the relay, is counted, never
        raised."""
        if addr != self.config.server:
            self._counters.foreign += 1  # nobody else speaks for the relay
            return
        if self.state in (_S.IDLE, _S.CLOSED):
            self._counters.unexpected += 1
            return
        try:
            datagram = wire.decode_datagram(data)
        except wire.DecodeError:
            self._counters.malformed += 1
            return
        match datagram:
            case wire.Protected(kind=wire.DatagramType.PATH_RESPONSE):
                self._counters.unexpected += 1  # only a relay receives those
            case wire.Protected():
                self._on_session_datagram(datagram, len(data), now)
            case wire.Reject():
                self._on_reject(datagram, now)
            case wire.Challenge():
                self._on_challenge(datagram, now)
            case wire.Accept():
                self._on_accept(datagram, now)
            case wire.Reset():
                self._on_reset(datagram, now)
            case _:  # HELLO, JOIN: only a relay receives those
                self._counters.unexpected += 1

    def _on_challenge(self, challenge: wire.Challenge, now: float) -> None:
        if self.state not in HANDSHAKING or challenge.nonce != self._handshake.nonce:
            self._counters.wrong_session += 1
            return
        try:
            started = self._handshake.on_challenge(challenge, self.state is _S.JOINING, now)
        except Refused as refused:
            self._close(refused.reason)
            return
        if started:
            self._machine.fire(Trigger.CHALLENGE)

    def _on_accept(self, accept: wire.Accept, now: float) -> None:
        link = self._link
        if link is not None and accept.token == link.token:
            return  # the same ACCEPT again, for a retransmitted JOIN
        if self.state is not _S.JOINING:
            self._counters.unexpected += 1
            return
        opened = self._handshake.on_accept(accept, now, self._uplink.last_stats.srtt)
        if opened is None:
            return  # counted
        payload, keys, hint = opened
        self._uplink.adopt(accept.token, self.config.link, hint, keys, payload, now)
        self._machine.fire(Trigger.ACCEPT)

    def _on_reject(self, reject: wire.Reject, now: float) -> None:
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
        final = not self._cursor.welcomed_once or code in FINAL_REJECTS
        if code == wire.RejectCode.NICK_TAKEN and not final:
            candidate = self._handshake.suffixed_nick(self.nick)
            if candidate is not None:
                self._emit(
                    ev.ErrorReported(f"the nickname {self.nick} is taken; trying {candidate}")
                )
                self._room.nick = candidate
                self._machine.fire(Trigger.RETRY)
                self._begin_attempt(now)
                return
            final = True
        if final:
            self._emit(ev.JoinRejected(code, reason))
            self._close(reason or "the relay refused to let us in")
            return
        self._emit(ev.ErrorReported(reason or f"the relay refused the rejoin (code {code})"))
        self._schedule_attempt(now, immediate=False)

    def _on_reset(self, reset: wire.Reset, now: float) -> None:
        if self._uplink.reset_is_ours(reset):
            self._cursor.lose_place()  # whatever the epoch, our place is gone
            self._lose("the relay lost our session", now, immediate=True)

    def _on_session_datagram(self, envelope: wire.Protected, size: int, now: float) -> None:
        link = self._link
        delivered = self._uplink.receive(envelope, size, now)
        if link is None or delivered is None:
            return  # counted
        for data in delivered:
            if self._link is not link:
                break  # a SHUTDOWN ended this link; the rest belongs to it
            try:
                message = msg.decode_message(data)
            except wire.DecodeError:
                self._counters.bad_messages += 1
                continue
            self._on_message(message, now)
        if self._link is link and link.idle:
            self._ledger.link_idle(link.token)  # the relay holds all we sent on it
            if self.state in LEAVING_STATES:
                self._close("left the room")

    # --- messages from the relay --------------------------------------------------------------

    def _on_message(self, message: msg.Message, now: float) -> None:
        state = self.state
        if state in _WELCOME_DUE:
            match message:
                case msg.Welcome() if state is _S.LEAVING_EARLY:
                    self._machine.fire(Trigger.WELCOME)  # we quit before it: nothing to set up
                case msg.Welcome():
                    self._on_welcome(message, now)
                case _:
                    self._counters.bad_messages += 1  # WELCOME is always first (protocol.md 4)
            return
        match message:
            case msg.Shutdown():
                self._on_shutdown(message, now)
            case _:
                self._room.on_message(message, now)

    def _on_welcome(self, welcome: msg.Welcome, now: float) -> None:
        link = self._link
        assert link is not None
        rejoin = self._cursor.welcomed_once
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
        self._machine.fire(Trigger.WELCOME)
        if rejoin:
            self._counters.reconnects += 1
        self._emit(ev.Welcomed(self.nick, self.members, resumed=continuity.kept_place))
        self._feed(now)

    def _on_shutdown(self, message: msg.Shutdown, now: float) -> None:
        link = self._link
        if link is not None:  # the relay waits for this ACK before it stops
            link.acknowledge_now()
            self._uplink.out.extend(link.datagrams_to_send(now))
        text = message.text or "no reason given"
        self._lose(f"the relay is shutting down: {text}", now)

    # --- losing and rejoining -----------------------------------------------------------------

    def _begin_attempt(self, now: float) -> None:
        """A fresh attempt with its own deadline (the state is CONNECTING already)."""
        first_join = not self._cursor.welcomed_once
        self._handshake.start_attempt(self.nick, now, self.config.join_timeout, first_join)

    def _remember_resume(self) -> None:
        """The current link will be gone: the next JOIN asks to resume its session."""
        link = self._link
        if link is not None:
            epoch = self._uplink.epoch
            self._handshake.remember_resume(epoch, link.token, self._cursor.resume_seq(epoch))

    def _retire_link(self) -> None:
        self._uplink.retire()

    def _lose(self, reason: str, now: float, immediate: bool = False) -> None:
        """The relay is gone (silence, dead link, RESET, SHUTDOWN): rejoin or close."""
        if self.state in LEAVING_STATES:
            self._close("left the room")
            return
        self._remember_resume()
        self._retire_link()
        if not self._cursor.welcomed_once:
            # Lost during the first join: try again within the same join deadline.
            self._machine.fire(Trigger.RETRY)
            self._begin_attempt(now)
            return
        self._emit(ev.ConnectionLost(reason))
        if not self.config.reconnect:
            self._close(reason)
            return
        self._schedule_attempt(now, immediate)

    def _schedule_attempt(self, now: float, immediate: bool) -> None:
        self._retire_link()
        delay = self._backoff.schedule(now, immediate)
        self._handshake.stop()
        self._machine.fire(Trigger.LOSE)
        self._emit(ev.Reconnecting(self._backoff.attempt, delay))

    def _attempt_failed(self, now: float) -> None:
        if not self._cursor.welcomed_once:
            reason = "the relay does not answer (check the address and port)"
            unverified = self._handshake.unverified
            if unverified is not None:
                reason += f"; an unverifiable reply said: {unverified}"
            self._close(reason)
            return
        self._remember_resume()  # ACCEPT came but WELCOME did not: resume that session next
        self._schedule_attempt(now, immediate=False)

    def _close(self, reason: str) -> None:
        self._ledger.close()
        self._retire_link()
        self._machine.fire(Trigger.CLOSE)
        self._emit(ev.Closed(reason))

    # --- output and timers --------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything due now, to the relay (the link seals what it sends)."""
        handshake, self._handshake.out = self._handshake.out, []  # ready as they are
        out, self._uplink.out = self._uplink.out, []
        link = self._link
        if link is not None and self.state in LINKED:
            self._feed(now)
            sent = link.datagrams_to_send(now)
            if sent:
                self._uplink.last_sent = now
                out.extend(sent)
        server = self.config.server
        return [(data, server) for data in (*handshake, *out)]

    def next_timer(self) -> float | None:
        """The earliest time at which ``handle_timer`` has work, or None."""
        state = self.state
        if state in (_S.IDLE, _S.CLOSED):
            return None
        if self._uplink.out or self._handshake.out:
            return ASAP
        deadlines: list[float | None] = []
        if state in _ATTEMPTING:
            deadlines.append(self._handshake.attempt_deadline)
        if state is _S.RECONNECTING:
            deadlines.append(self._backoff.due)
        link = self._link
        if link is None:
            if state in HANDSHAKING:
                deadlines.append(self._handshake.retry_at)
        else:
            deadlines.append(link.next_timer())
            deadlines.append(self._uplink.ping_due())
            deadlines.append(self._uplink.silent_at)
            if state in LEAVING_STATES:
                deadlines.append(self._quit_deadline)
            deadlines.append(self._ledger.pace_at)
        due = [d for d in deadlines if d is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Do whatever is due at ``now``: retransmit, ping, give up, rejoin, close."""
        state = self.state
        if state in (_S.IDLE, _S.CLOSED):
            return
        link = self._link
        if link is not None:
            link.handle_timer(now)
            if link.dead:
                self._lose("the relay stopped acknowledging", now)
                return
            if now >= self._uplink.silent_at:
                self._lose("the relay went silent", now)
                return
            quit_deadline = self._quit_deadline
            if state in LEAVING_STATES and quit_deadline is not None and now >= quit_deadline:
                self._close("left the room (the relay did not confirm)")
                return
            if now >= self._uplink.ping_due():
                self._uplink.ping(link, now)
        if state in _ATTEMPTING:
            deadline = self._handshake.attempt_deadline
            if deadline is not None and now >= deadline:
                self._attempt_failed(now)
                return
            retry_at = self._handshake.retry_at
            if link is None and retry_at is not None and now >= retry_at:
                self._handshake.send(now, first=False)
        elif state is _S.RECONNECTING and self._backoff.is_due(now):
            self._backoff.due = None
            self._machine.fire(Trigger.RETRY)
            self._begin_attempt(now)
