"""The client session, sans I/O: one member's session with one relay, across links.

A ``ClientSession`` is the member's side of protocol.md sections 4, 6 and 7 behind the
``udpchat.endpoint.Endpoint`` interface, so the simulator and the socket driver drive it as
they drive the relay core. It owns the parts that outlive a link and routes to them: the
handshake (``joining``), the current link (``uplink``), the room (``cursor``, ``room``), the
member's own messages (``ledger``), and the life cycle (``lifecycle``), whose every change
of state is a trigger of the table in ``states``; ``timers`` reads and runs their deadlines.

Like the link it never touches a socket, a clock or a random source of its own: the runtime
feeds it datagrams with their source address and ``now``, drains ``datagrams_to_send`` (each
to the relay's address) and ``events``, and calls ``handle_timer`` at ``next_timer``;
randomness comes from the injected ``rng``. A datagram from any other address than the
relay's is counted and dropped: nobody else speaks for the relay.

With other relays in its config (``fallbacks``), the session holds them in a ``RelayRing``
and decides itself when to move to the next one and which (protocol.md 6.9); ``server``
names the relay of the moment, the one every datagram goes to and the only one heard. The
runtime follows it: it only changes where datagrams go.
"""

from __future__ import annotations

from collections.abc import Callable

from udpchat import events as ev
from udpchat import messages as msg
from udpchat import wire
from udpchat.client.config import (
    ClientConfig,
    ClientStats,
    Counters,
    LocalProtocolError,
    QueueFull,
    Trust,
    trust_any,
)
from udpchat.client.cursor import RoomCursor
from udpchat.client.joining import Handshake
from udpchat.client.ledger import Ledger
from udpchat.client.lifecycle import Lifecycle
from udpchat.client.relays import RelayRing
from udpchat.client.room import RoomView
from udpchat.client.states import (
    LEAVING_STATES,
    LINKED,
    OPEN,
    WELCOME_DUE,
    SessionState,
)
from udpchat.client.timers import SessionTimers
from udpchat.client.uplink import Uplink
from udpchat.endpoint import Address
from udpchat.link import Link
from udpchat.names import nick_error
from udpchat.seal import PskDeriver

__all__ = ["ClientSession"]

_S = SessionState
_DEAD = (_S.IDLE, _S.CLOSED)  # no datagram is taken
# Session datagrams the link opens (PATH_RESPONSE is only ever the relay's to receive).
_LINK_KINDS = frozenset(wire.SESSION_TYPES) - {wire.DatagramType.PATH_RESPONSE}


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
        trust_for: Callable[[Address], Trust] | None = None,
    ) -> None:
        """``trust`` checks every relay's key; ``trust_for(address)``, when given, is the
        check for the relay at ``address`` instead (each relay of a list has its own)."""
        self.config = config
        self._rng = rng
        self._events: list[ev.ClientEvent] = []
        self._counters = Counters()
        self._trust = trust if trust is not None else trust_any
        self._trust_for = trust_for
        self._handshake = Handshake(rng, room_key, self._check_key, self._counters, now)
        self._ring = RelayRing(config.server, config.fallbacks)
        # With somewhere to go, a silent relay is left sooner (protocol.md 6.9).
        silence = config.failover_silence if self._ring.many else config.relay_silence
        self._uplink = Uplink(self._counters, silence, now)
        self._cursor = RoomCursor(self._emit)
        self._ledger = Ledger(config, self._emit, now)
        self._room = RoomView(
            config.nick, self._cursor, self._ledger, self._counters, self._emit, wall_offset
        )
        self._life = Lifecycle(
            config,
            self._handshake,
            self._uplink,
            self._cursor,
            self._ledger,
            self._room,
            self._counters,
            self._emit,
            self._ring,
        )
        self._machine = self._life.machine  # read on every datagram
        self._timers = SessionTimers(self._life, self._handshake, self._uplink, self._ledger)

    # --- what the session shows ---------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._machine.state

    @property
    def server(self) -> Address:
        """The relay of the moment: where datagrams go, and the only address heard."""
        return self._ring.current

    @property
    def relays(self) -> tuple[Address, ...]:
        """Every relay of the list, in the order given (``server`` first at the start)."""
        return self._ring.addresses

    @property
    def nick(self) -> str:
        """The nickname: the one asked for until WELCOME, then the relay's word for it."""
        return self._room.nick

    @property
    def members(self) -> tuple[str, ...]:
        return self._room.members

    @property
    def room_size(self) -> int:
        """How many are in the room: exact even when ``members`` lists only those we know
        of in a paged room (protocol.md 6.7) until a /who has fetched every page."""
        return self._room.room_size if self._room.room_size is not None else len(self.members)

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

    def _check_key(self, relay_key: bytes) -> str | None:
        """The trust check for the relay of the moment (the CHALLENGE came from it)."""
        trust = self._trust if self._trust_for is None else self._trust_for(self.server)
        return trust(relay_key)

    # --- user actions -------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Start the first join: send HELLO."""
        self._life.connect(now)

    def say(self, text: str, now: float) -> int:
        """Send a chat line; return the local id its MessagePending and answer will carry."""
        return self._post(msg.Say(text, self._new_msgid()), now)

    def action(self, text: str, now: float) -> int:
        """Send an action (``/me``); same life cycle as ``say``."""
        return self._post(msg.Action(text, self._new_msgid()), now)

    def private(self, to: str, text: str, now: float) -> int:
        """Send a private message; return the request id an ``ErrorReported`` answer names."""
        self._require_open("send a private message")
        error = nick_error(to) or msg.text_error(text)
        if error is not None:
            raise ValueError(error)
        return self._request(msg.PrivateSend(to, text, self._new_msgid()), now)

    def change_nick(self, nick: str, now: float) -> int:
        """Ask for a new nickname; return the request id, as ``private`` does."""
        self._require_open("change nickname")
        error = nick_error(nick)
        if error is not None:
            raise ValueError(error)
        return self._request(msg.NickRequest(nick), now)

    def who(self, now: float) -> int:
        """Ask who is here; return the request id, as ``private`` does."""
        self._require_open("ask who is here")
        return self._request(msg.WhoPage("") if self._room.paged else msg.Who(), now)

    def unreachable(self, reason: str, now: float) -> bool:
        """The network says nothing listens at the relay's address (ICMP port unreachable).

        During the first join that is final, and waiting out the join timeout would only
        keep the user waiting: the session closes with ``reason`` and True is returned (with
        a list of relays, the next one is tried at once, and the session closes only when
        every one was refused). Once joined, the relay may be restarting on that port, so
        rejoining goes on (False).
        """
        if self._cursor.welcomed_once or self.state in (_S.IDLE, _S.CLOSED):
            return False
        return self._life.unreachable(reason, now)

    def quit(self, reason: str, now: float) -> None:
        """Leave the room: QUIT on the link if there is one, then CLOSED."""
        self._require_open("quit")
        size = len(reason.encode("utf-8", "surrogatepass"))
        if size > wire.MAX_REASON_BYTES:
            raise ValueError(
                f"quit message is {size} bytes; the limit is {wire.MAX_REASON_BYTES} bytes"
            )
        self._life.quit(reason, now)

    def _require_open(self, doing: str) -> None:
        if self._machine.state not in OPEN:
            raise LocalProtocolError(f"cannot {doing} while {self.state.value}")

    def _new_msgid(self) -> bytes:
        """protocol.md 6.1: the id that lets the relay recognise this request if it is sent
        again on a new session, so that it is posted once whatever the rejoin lost."""
        msgid = self._rng(msg.MSGID_SIZE)
        if len(msgid) != msg.MSGID_SIZE:
            raise ValueError(f"rng returned {len(msgid)} bytes, not {msg.MSGID_SIZE}")
        return msgid

    def _post(self, message: msg.Say | msg.Action, now: float) -> int:
        self._require_open("send a message")
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
            self._life.feed(now)

    # --- receiving ----------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram; garbage, and anything not from the relay, is counted, never
        raised."""
        if addr != self._ring.current:
            self._counters.foreign += 1
            return
        if self._machine.state in _DEAD:
            self._counters.unexpected += 1
            return
        try:
            datagram = wire.decode_datagram(data)
        except wire.DecodeError:
            self._counters.malformed += 1
            return
        if type(datagram) is wire.Protected and datagram.kind in _LINK_KINDS:
            self._on_session_datagram(datagram, len(data), now)  # the common case, first
            return
        match datagram:
            case wire.Protected(kind=wire.DatagramType.PATH_RESPONSE):
                self._counters.unexpected += 1  # only a relay receives those
            case wire.Protected():
                self._on_session_datagram(datagram, len(data), now)
            case wire.Reject():
                self._life.on_reject(datagram, now)
            case wire.Busy():
                self._life.on_busy(datagram, now)
            case wire.Challenge():
                self._life.on_challenge(datagram, now)
            case wire.Accept():
                self._life.on_accept(datagram, now)
            case wire.Reset():
                self._life.on_reset(datagram, now)
            case _:  # HELLO, JOIN: only a relay receives those
                self._counters.unexpected += 1

    def _on_session_datagram(self, envelope: wire.Protected, size: int, now: float) -> None:
        uplink = self._uplink
        link = uplink.link
        delivered = uplink.receive(envelope, size, now)
        if link is None or delivered is None:
            return  # counted
        if delivered:
            for data in delivered:
                if uplink.link is not link:
                    break  # a SHUTDOWN ended this link; the rest belongs to it
                try:
                    message = msg.decode_message(data)
                except wire.DecodeError:
                    self._counters.bad_messages += 1
                    continue
                self._on_message(message, now)
        if uplink.link is link and link.idle:
            self._ledger.link_idle(link.token)  # the relay holds all we sent on it
            if self._machine.state in LEAVING_STATES:
                self._life.close("left the room")

    def _on_message(self, message: msg.Message, now: float) -> None:
        if self._machine.state in WELCOME_DUE:
            if isinstance(message, msg.Welcome):
                self._life.on_welcome(message, now)
            else:
                self._counters.bad_messages += 1  # WELCOME is always first (protocol.md 4)
            return
        if isinstance(message, msg.Shutdown):
            self._life.on_shutdown(message, now)
            return
        room = self._room
        room.on_message(message, now)
        if room.next_page is not None:  # protocol.md 6.7: the next page
            after, request = room.next_page
            room.next_page = None
            try:
                self._ledger.enqueue(msg.WhoPage(after), request=request)
            except QueueFull as full:  # the list stays as far as it came
                self._emit(ev.ErrorReported(f"/who stopped: {full}", request))
            self._feed_if_joined(now)

    # --- output and timers --------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything due now, to the relay (the link seals what it sends)."""
        # Called after every datagram and every call: nothing but the answer is allocated
        # when nothing is due, the common case.
        uplink, handshake = self._uplink, self._handshake
        early = handshake.out  # ready as they are
        if early:
            handshake.out = []
        out = uplink.out
        if out:
            uplink.out = []
        link = uplink.link
        if link is not None and self._machine.state in LINKED:
            self._life.feed(now)
            sent = link.datagrams_to_send(now)
            if sent:
                uplink.last_sent = now
                out = out + sent if out else sent
        if not (early or out):
            return []
        server = self._ring.current
        if early:
            out = early + out
        return [(data, server) for data in out]

    def next_timer(self) -> float | None:
        """The earliest time at which ``handle_timer`` has work, or None."""
        return self._timers.next_timer()

    def handle_timer(self, now: float) -> None:
        """Do whatever is due at ``now``: retransmit, ping, give up, rejoin, close."""
        self._timers.handle_timer(now)
