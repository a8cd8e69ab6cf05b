"""The client session, sans I/O: handshake, chat, liveness and rejoining with resume.

A ``ClientSession`` owns one ``Link`` at a time and everything a member must remember across
links: its nickname, the room sequence number it has seen, and the messages the relay has not
confirmed. Like the link it never touches a socket, a clock or a random source of its own:
the runtime feeds it datagrams and ``now``, drains ``datagrams_to_send`` and ``events``, and
calls ``handle_timer`` at ``next_timer``; randomness comes from the injected ``rng``. That
keeps every behaviour of protocol.md sections 4, 6 and 7 testable on a virtual clock.

Own messages live in one of five places, so none is lost or sent twice across a rejoin:

* the *outbox*: not yet handed to a link (typed while away, or the link's buffer is full);
* the *log*: handed to the current link, not yet known to have reached the relay;
* *awaiting*: SAY and ACTION handed to the current link whose POSTED or REFUSED is due;
* *limbo*: ones a previous session received but never answered;
* *resend*: ones a previous session may not have received.

After a rejoin, WELCOME's ``resumed`` says how much of the log the relay got: the rest goes to
*resend*, the unanswered part to *limbo*. Own messages in the catch-up history confirm
entries of both; once history is over, what is left in limbo is reported unconfirmed and
*resend* goes out again, ahead of the outbox.
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum

from udpchat import events as ev
from udpchat import handshake as hs
from udpchat import messages as msg
from udpchat import wire
from udpchat.errors import UsageError
from udpchat.link import ASAP, Link, LinkConfig, LinkDead, LinkStats, SendBufferFull
from udpchat.names import MAX_NICK_LENGTH, nick_error, nick_key
from udpchat.noise import DHLEN, NoiseError, usable_public_key
from udpchat.ratelimit import TokenBucket
from udpchat.seal import PskDeriver, SessionKeys

__all__ = [
    "ClientConfig",
    "ClientSession",
    "ClientStats",
    "LocalProtocolError",
    "QueueFull",
    "SessionState",
    "Trust",
]

# protocol.md 4: HELLO and JOIN are retransmitted after 250 ms, doubling up to 4 s.
HANDSHAKE_FIRST_RETRY = 0.25
HANDSHAKE_MAX_RETRY = 2.0  # a lossy path needs attempts more than it needs quiet
# protocol.md 7.1: the first wait before rejoining; it doubles up to max_reconnect_delay.
RECONNECT_FIRST_DELAY = 0.5
# A relay may announce any heartbeat up to an hour; below this we would only flood it.
MIN_HEARTBEAT = 0.05

_LEAVE_REASONS: dict[int, str] = {
    msg.LeaveReason.QUIT: "quit",
    msg.LeaveReason.TIMEOUT: "timed out",
    msg.LeaveReason.DROPPED: "dropped",
    msg.LeaveReason.REPLACED: "replaced",
}
# REJECT codes after which trying again cannot help, even on a rejoin.
_FINAL_REJECTS = {wire.RejectCode.NICK_INVALID, wire.RejectCode.VERSION, wire.RejectCode.BAD_KEY}
# protocol.md 6.5: after the first refusal of a burst, the relay's refusals say nothing.
_SILENT_REFUSAL = "flood control: not delivered"
_UNCONFIRMED = "the relay did not confirm this message before the connection was lost"
_CLOSED_UNCONFIRMED = "the session closed before the relay confirmed this message"


# protocol.md 4: hashes of the handshake datagrams sent in one attempt, kept to recognise a
# REJECT bound to one of them. An attempt sends about a dozen; the bound only caps memory.
MAX_HANDSHAKE_HASHES = 32
# psks derived per relay key (protocol.md 8): a few, for a client that meets several relays.
MAX_CACHED_KEYS = 4
# JOIN handshakes kept for one nonce: a retransmitted JOIN with a fresh cookie, or a new
# attempt with the same nonce, may be answered with the ACCEPT of an earlier one (protocol.md 4).
MAX_KEPT_HANDSHAKES = 4
# protocol.md 4: a CHALLENGE says whether the relay has a room key; a mismatch is final.
NEEDS_KEY = "this room needs a key: give it with --key or UDPCHAT_KEY"
NO_ROOM_KEY = "this relay has no room key; join without --key"


Trust = Callable[[bytes], "str | None"]
"""Decides whether to talk to the relay whose static public key is given: None to go on, or
the refusal to show (the join then ends). The shell checks it against the pinned keys."""


def trust_any(relay_key: bytes) -> str | None:
    """The core's default: every relay key is accepted (the shell passes a real check)."""
    return None


class LocalProtocolError(UsageError):
    """The session was asked to do something its current state does not allow."""


class QueueFull(UsageError):
    """Too many messages wait for the relay; nothing was queued (back-pressure)."""


class SessionState(Enum):
    IDLE = "idle"  # created, connect() not called yet
    CONNECTING = "connecting"  # HELLO sent, waiting for CHALLENGE
    JOINING = "joining"  # JOIN sent; after ACCEPT, waiting for WELCOME on the new link
    JOINED = "joined"  # WELCOME processed: chatting
    RECONNECTING = "reconnecting"  # the relay was lost; waiting for the next attempt
    LEAVING = "leaving"  # QUIT sent, waiting for its acknowledgement
    CLOSED = "closed"  # final


_S = SessionState
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    _S.IDLE: frozenset({_S.CONNECTING, _S.CLOSED}),
    _S.CONNECTING: frozenset({_S.CONNECTING, _S.JOINING, _S.RECONNECTING, _S.CLOSED}),
    _S.JOINING: frozenset({_S.JOINED, _S.CONNECTING, _S.RECONNECTING, _S.LEAVING, _S.CLOSED}),
    _S.JOINED: frozenset({_S.RECONNECTING, _S.LEAVING, _S.CLOSED}),
    _S.RECONNECTING: frozenset({_S.CONNECTING, _S.CLOSED}),
    _S.LEAVING: frozenset({_S.CLOSED}),
    _S.CLOSED: frozenset(),
}


@dataclass(frozen=True)
class ClientConfig:
    nick: str
    link: LinkConfig = field(default_factory=LinkConfig)
    join_timeout: float = 10.0  # give up a join attempt after this (protocol.md 4)
    relay_silence: float = 5.0  # the relay is lost after this much silence (protocol.md 7.1)
    quit_timeout: float = 2.0
    reconnect: bool = True
    max_reconnect_delay: float = 10.0
    max_pending: int = 1000  # messages queued while no link takes them
    # Requests leave at most this fast, a little under the relay's default flood limits
    # (protocol.md 6.5), so that a paste or a script is paced, not refused. 0: no pacing.
    pace_rate: float = 4.5
    pace_burst: int = 8

    def __post_init__(self) -> None:
        error = nick_error(self.nick)
        if error is not None:
            raise ValueError(error)
        for name in ("join_timeout", "relay_silence", "quit_timeout", "max_reconnect_delay"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")


@dataclass(frozen=True)
class ClientStats:
    """Counters for /stats: what was dropped and why, and the current link's numbers."""

    malformed: int  # not udpchat, not authentic, or impossible ACK fields
    wrong_session: int  # a token or handshake nonce that is not ours
    replays: int  # packet numbers seen before (protocol.md 5.6)
    unexpected: int  # valid, but meaningless in the current state
    bad_messages: int  # stream messages that do not decode or make no sense
    reconnects: int  # times the session was re-established after losing the relay
    link: LinkStats

    @property
    def srtt(self) -> float:
        return self.link.srtt

    @property
    def rto(self) -> float:
        return self.link.rto

    @property
    def retransmissions(self) -> int:
        return self.link.retransmissions

    @property
    def loss_estimate(self) -> float:
        return self.link.loss_estimate


@dataclass(eq=False, slots=True)
class _Outgoing:
    """One message of ours on its way to the relay."""

    message: msg.ClientMessage
    data: bytes
    local_id: int | None = None  # SAY and ACTION: the id the user was given
    request: int | None = None  # PRIVATE_SEND, NICK and WHO: the id the user was given
    internal: bool = False  # a WHO sent only to learn where catch-up history ends
    index: int = -1  # its position in the current link's stream once handed over


def _chat_kind(message: msg.ClientMessage) -> tuple[bool, str] | None:
    """(is an action, text) for SAY and ACTION, None for other messages."""
    if isinstance(message, msg.Say):
        return False, message.text
    if isinstance(message, msg.Action):
        return True, message.text
    return None


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
        # protocol.md 8: the psk is derived for the relay key in the CHALLENGE, once per key.
        self._room_key = room_key
        self._psks: dict[bytes, bytes] = {}
        self._trust = trust if trust is not None else trust_any
        self._relay_key = b""  # the static key of the relay this handshake talks to
        self._may_change_key = True  # once per HELLO (see _on_challenge)
        self._link_config = config.link
        self._wall_offset = wall_offset
        self._state = SessionState.IDLE
        self._events: list[ev.ClientEvent] = []
        self._out: list[bytes] = []  # plaintext datagrams outside the link (paths, ACKs)
        self._handshake_out: list[bytes] = []  # HELLO and JOIN, as they go on the wire
        self.nick = config.nick
        self._members: dict[str, str] = {}
        # handshake
        self._nonce = b""
        self._join_unanswered = False
        self._cookie: bytes | None = None
        self._join_nick = config.nick
        self._retry_at: float | None = None
        self._retry_interval = HANDSHAKE_FIRST_RETRY
        self._handshake_sends = 0
        self._handshake_sent_at = now
        # request_hash of every HELLO and JOIN of this attempt (protocol.md 4)
        self._sent_hashes: deque[bytes] = deque(maxlen=MAX_HANDSHAKE_HASHES)
        self._unverified: str | None = None  # what an unbound REJECT said, if one came
        # Noise handshakes started for the current nonce, newest last, and the JOIN to resend.
        self._handshakes: deque[hs.Initiator] = deque(maxlen=MAX_KEPT_HANDSHAKES)
        self._join_datagram = b""
        self._reset_token = b""  # protocol.md 7.2: proves a RESET for the current session
        self._hello_rtt: float | None = None
        self._attempt_deadline: float | None = None
        self._join_deadline: float | None = None
        self._suffix_base: str | None = None
        self._suffix_count = 0
        # the current link and what it told us
        self._link: Link | None = None
        self._epoch = b""
        self._heartbeat = 1.0
        self._silence = config.relay_silence
        self._last_sent = now
        self._last_heard = now
        self._last_ping = now
        self._welcomed = False  # WELCOME received on the current link
        self._ever_welcomed = False
        # the room
        self._welcome_seq = 0
        self._last_seq = 0
        self._seq_epoch: bytes | None = None  # the relay incarnation _last_seq belongs to
        self._match_above: int | None = None  # own history events above this confirm limbo
        self._own_joined_seq: int | None = None
        self._resume: wire.Resume | None = None
        # protocol.md 4.2: the current link's resume secret, and the one of the session
        # named in _resume
        self._link_resume_secret = b""
        self._resume_secret = b""
        self._session_reset = False
        # rejoining
        self._reconnect_at: float | None = None
        self._backoff = RECONNECT_FIRST_DELAY
        self._attempt = 0
        self._quit_deadline: float | None = None
        # own messages (see the module docstring)
        self._next_local_id = 1
        self._outbox: deque[_Outgoing] = deque()
        self._pacer = (
            TokenBucket(config.pace_rate, config.pace_burst, updated=now)
            if config.pace_rate > 0
            else None
        )
        self._pace_at: float | None = None  # when the pacer lets the next request go
        self._log: deque[_Outgoing] = deque()
        self._log_token: bytes | None = None
        self._sent_count = 0
        self._awaiting: deque[_Outgoing] = deque()
        self._limbo: deque[_Outgoing] = deque()
        self._resend: deque[_Outgoing] = deque()  # held until catch-up history is over
        self._catching_up = False
        # PRIVATE_SEND, NICK and WHO handed to the current link, oldest first: the relay
        # answers each exactly once, in stream order (protocol.md 6.2).
        self._answers: deque[_Outgoing] = deque()
        # counters
        self._malformed = 0
        self._wrong_session = 0
        self._unexpected = 0
        self._bad_messages = 0
        self._reconnects = 0
        self._retired_replays = 0
        self._retired_invalid = 0
        self._last_link_stats = LinkStats()

    # --- state --------------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    def _transition(self, new: SessionState) -> None:
        if new not in TRANSITIONS[self._state]:
            raise LocalProtocolError(f"cannot go from {self._state.value} to {new.value}")
        self._state = new

    def _require(self, allowed: Iterable[SessionState], doing: str) -> None:
        if self._state not in allowed:
            raise LocalProtocolError(f"cannot {doing} while {self._state.value}")

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(sorted(self._members.values(), key=lambda n: (nick_key(n), n)))

    @property
    def pending(self) -> int:
        """Own SAY and ACTION messages the relay has neither posted nor refused yet."""
        queued = sum(1 for o in self._outbox if o.local_id is not None)
        held = sum(1 for o in self._resend if o.local_id is not None)
        return queued + held + len(self._awaiting) + len(self._limbo)

    @property
    def idle(self) -> bool:
        """Joined, with nothing queued, unacknowledged or awaiting the relay's answer."""
        link = self._link
        return (
            self._state is SessionState.JOINED
            and link is not None
            and link.idle
            and not self._outbox
            and not self._awaiting
            and not self._limbo
            and not self._catching_up
        )

    @property
    def stats(self) -> ClientStats:
        link = self._link
        current = link.stats if link is not None else self._last_link_stats
        return ClientStats(
            malformed=self._malformed + self._retired_invalid + current.invalid,
            wrong_session=self._wrong_session,
            replays=self._retired_replays + current.replays,
            unexpected=self._unexpected,
            bad_messages=self._bad_messages,
            reconnects=self._reconnects,
            link=replace(current),
        )

    def events(self) -> list[ev.ClientEvent]:
        """Drain the events that happened since the last call."""
        out, self._events = self._events, []
        return out

    def _emit(self, event: ev.ClientEvent) -> None:
        self._events.append(event)

    # --- user actions -------------------------------------------------------------------------

    def connect(self, now: float) -> None:
        """Start the first join: send HELLO."""
        self._require({SessionState.IDLE}, "connect")
        self._join_deadline = now + self.config.join_timeout
        self._start_attempt(now)

    def say(self, text: str, now: float) -> int:
        """Send a chat line; return the local id its MessagePending and answer will carry."""
        return self._post(msg.Say(text, self._new_msgid()), now)

    def action(self, text: str, now: float) -> int:
        """Send an action (``/me``); same life cycle as ``say``."""
        return self._post(msg.Action(text, self._new_msgid()), now)

    def private(self, to: str, text: str, now: float) -> int:
        """Send a private message; return the request id an ``ErrorReported`` answer names."""
        self._require_sendable("send a private message")
        error = nick_error(to) or msg.text_error(text)
        if error is not None:
            raise ValueError(error)
        return self._request(msg.PrivateSend(to, text, self._new_msgid()), now)

    def change_nick(self, nick: str, now: float) -> int:
        """Ask for a new nickname; return the request id, as ``private`` does."""
        self._require_sendable("change nickname")
        error = nick_error(nick)
        if error is not None:
            raise ValueError(error)
        return self._request(msg.NickRequest(nick), now)

    def who(self, now: float) -> int:
        """Ask who is here; return the request id, as ``private`` does."""
        self._require_sendable("ask who is here")
        return self._request(msg.Who(), now)

    def unreachable(self, reason: str) -> bool:
        """The network says nothing listens at the relay's address (ICMP port unreachable).

        During the first join that is final, and waiting out the join timeout would only
        keep the user waiting: the session closes with ``reason`` and True is returned. Once
        joined, the relay may be restarting on that port, so rejoining goes on (False).
        """
        if self._ever_welcomed or self._state in (SessionState.IDLE, SessionState.CLOSED):
            return False
        self._close(reason)
        return True

    def quit(self, reason: str, now: float) -> None:
        """Leave the room: QUIT on the link if there is one, then CLOSED."""
        self._require({_S.IDLE, _S.CONNECTING, _S.JOINING, _S.JOINED, _S.RECONNECTING}, "quit")
        size = len(reason.encode("utf-8", "surrogatepass"))
        if size > wire.MAX_REASON_BYTES:
            raise ValueError(
                f"quit message is {size} bytes; the limit is {wire.MAX_REASON_BYTES} bytes"
            )
        link = self._link
        if link is None:
            self._close("left the room")
            return
        quit_message = _Outgoing(msg.Quit(reason), msg.encode_message(msg.Quit(reason)))
        if self._state is not SessionState.JOINED:
            # No WELCOME yet: what waits for it will never be sent; only the QUIT goes.
            self._fail_unconfirmed(self._outbox, _CLOSED_UNCONFIRMED)
            self._outbox.clear()
        self._outbox.append(quit_message)
        self._transition(SessionState.LEAVING)
        self._quit_deadline = now + self.config.quit_timeout
        self._feed(now)

    def _new_msgid(self) -> bytes:
        """protocol.md 6.1: the id that lets the relay recognise this request if it is sent
        again on a new session, so that it is posted once whatever the rejoin lost."""
        msgid = self._rng(msg.MSGID_SIZE)
        if len(msgid) != msg.MSGID_SIZE:
            raise ValueError(f"rng returned {len(msgid)} bytes, not {msg.MSGID_SIZE}")
        return msgid

    def _require_sendable(self, doing: str) -> None:
        self._require({_S.IDLE, _S.CONNECTING, _S.JOINING, _S.JOINED, _S.RECONNECTING}, doing)

    def _post(self, message: msg.Say | msg.Action, now: float) -> int:
        self._require_sendable("send a message")
        error = msg.text_error(message.text)
        if error is not None:
            raise ValueError(error)
        local_id = self._next_local_id
        self._enqueue(message, now, local_id)
        self._next_local_id += 1
        self._emit(
            ev.MessagePending(local_id, message.text, action=isinstance(message, msg.Action))
        )
        return local_id

    def _request(self, message: msg.ClientMessage, now: float) -> int:
        request = self._next_local_id
        self._enqueue(message, now, request=request)
        self._next_local_id += 1
        return request

    def _enqueue(
        self,
        message: msg.ClientMessage,
        now: float,
        local_id: int | None = None,
        request: int | None = None,
    ) -> None:
        if len(self._outbox) >= self.config.max_pending:
            raise QueueFull(
                f"{len(self._outbox)} messages are already waiting for the relay; try again later"
            )
        self._outbox.append(_Outgoing(message, msg.encode_message(message), local_id, request))
        if self._state is SessionState.JOINED:
            self._feed(now)

    def _feed(self, now: float) -> None:
        """Hand queued messages to the link while it takes them (not during catch-up), no
        faster than the pace allows."""
        self._pace_at = None
        if self._catching_up or self._state not in (SessionState.JOINED, SessionState.LEAVING):
            return
        pacer = self._pacer
        while self._outbox:
            entry = self._outbox[0]
            paced = pacer is not None and not isinstance(entry.message, msg.Quit)
            if paced and pacer is not None and not pacer.take(now):
                self._pace_at = now + max((1 - pacer.tokens) / pacer.rate, 1e-6)
                return
            if not self._hand(entry):
                if pacer is not None:
                    pacer.tokens += 1  # not sent after all
                return
            self._outbox.popleft()

    def _hand(self, entry: _Outgoing) -> bool:
        """Give one message to the link and remember it until the relay shows it arrived."""
        link = self._link
        if link is None:
            return False
        try:
            link.send(entry.data)
        except (SendBufferFull, LinkDead):
            return False
        if isinstance(entry.message, msg.Quit):
            return True  # never resent: nothing is kept for it
        entry.index = self._sent_count
        self._sent_count += 1
        self._log.append(entry)
        if entry.local_id is not None:
            self._awaiting.append(entry)
        elif isinstance(entry.message, (msg.PrivateSend, msg.NickRequest, msg.Who)):
            self._answers.append(entry)
        return True

    # --- the handshake ------------------------------------------------------------------------

    def _start_attempt(self, now: float) -> None:
        """A fresh attempt, with its own deadline: a new handshake."""
        deadline = now + self.config.join_timeout
        if not self._ever_welcomed and self._join_deadline is not None:
            deadline = min(deadline, self._join_deadline)
        self._attempt_deadline = deadline
        self._begin_handshake(now)

    def _begin_handshake(self, now: float) -> None:
        """HELLO and its retransmission timer.

        The nonce is new unless the last attempt's JOIN went unanswered: the relay may have
        admitted it and lost only the ACCEPT, and the same nonce from the same address gets
        that ACCEPT again (protocol.md 4) instead of a session holding our nickname.
        """
        if not self._join_unanswered or not self._nonce:
            nonce = self._rng(wire.NONCE_SIZE)
            if len(nonce) != wire.NONCE_SIZE:
                raise ValueError(f"rng returned {len(nonce)} bytes, not {wire.NONCE_SIZE}")
            self._nonce = nonce
            self._handshakes.clear()  # an ACCEPT for another nonce is never ours
        self._join_unanswered = False
        self._may_change_key = True
        self._cookie = None
        self._hello_rtt = None
        self._join_nick = self.nick
        self._sent_hashes.clear()
        self._transition(SessionState.CONNECTING)
        self._send_handshake(now, first=True)

    def _send_handshake(self, now: float, first: bool) -> None:
        """HELLO, or the JOIN built at the CHALLENGE (the same bytes each time: one
        handshake per cookie), with its hash kept: a REJECT bound to it is the relay's answer
        to us (protocol.md 4)."""
        if self._cookie is None:
            datagram = wire.encode_hello(self._nonce)
        else:
            datagram = self._join_datagram
            self._join_unanswered = True
        self._sent_hashes.append(wire.request_hash(datagram))
        self._handshake_out.append(datagram)
        if first:
            self._handshake_sends = 1
            self._handshake_sent_at = now
            self._retry_interval = HANDSHAKE_FIRST_RETRY
        else:
            self._handshake_sends += 1
        self._retry_at = now + self._retry_interval
        self._retry_interval = min(self._retry_interval * 2, HANDSHAKE_MAX_RETRY)

    def _in_handshake(self) -> bool:
        return self._link is None and self._state in (_S.CONNECTING, _S.JOINING)

    def _on_challenge(self, challenge: wire.Challenge, now: float) -> None:
        if not self._in_handshake() or challenge.nonce != self._nonce:
            self._wrong_session += 1
            return
        if self._state is SessionState.JOINING and challenge.relay_key != self._relay_key:
            # Another relay key during the JOIN: the relay restarted as another identity
            # between its CHALLENGE and our JOIN, or someone on the path answers for it. The
            # new key is checked and taken once per HELLO, so that at most two psks are
            # derived per HELLO however many CHALLENGEs arrive.
            if not self._may_change_key or not usable_public_key(challenge.relay_key):
                self._unexpected += 1
                return
            self._may_change_key = False
            if self._take_relay_key(challenge):
                self._start_join(challenge.cookie)
                self._send_handshake(now, first=False)
            return
        if self._state is SessionState.CONNECTING:
            if not self._take_relay_key(challenge):
                return
            if self._handshake_sends == 1:  # Karn: only an unambiguous sample
                self._hello_rtt = now - self._handshake_sent_at
            self._start_join(challenge.cookie)
            self._transition(SessionState.JOINING)
            self._send_handshake(now, first=True)
        elif challenge.cookie != self._cookie:
            # Our cookie expired while JOINs were lost: the relay sent a fresh one.
            self._start_join(challenge.cookie)
            self._send_handshake(now, first=False)

    def _take_relay_key(self, challenge: wire.Challenge) -> bool:
        """Check the relay's static key and the room key against what the CHALLENGE says, or
        end the join as protocol.md 4 says. The CHALLENGE carries our nonce, so nobody off
        the path can have sent it."""
        if not usable_public_key(challenge.relay_key):
            # Not a key any relay could hold: forged on the path. Ignored, never trusted (or
            # remembered), and the join goes on waiting for the real CHALLENGE.
            self._malformed += 1
            return False
        room_key = self._room_key
        if room_key is None and challenge.keyed:
            self._close(NEEDS_KEY)
            return False
        if room_key is not None and not challenge.keyed:
            self._close(NO_ROOM_KEY)
            return False
        refusal = self._trust(challenge.relay_key)
        if refusal is not None:
            self._close(refusal)
            return False
        self._relay_key = challenge.relay_key
        return True

    def _psk(self) -> bytes | None:
        """The psk for the current relay key: scrypt once per relay identity."""
        room_key = self._room_key
        if room_key is None:
            return None
        psk = self._psks.get(self._relay_key)
        if psk is None:
            if len(self._psks) >= MAX_CACHED_KEYS:
                del self._psks[next(iter(self._psks))]
            psk = self._psks[self._relay_key] = room_key(self._relay_key)
        return psk

    def _start_join(self, cookie: bytes) -> None:
        """Noise message 1 for this cookie, in the JOIN sent until the relay answers."""
        self._cookie = cookie
        datagram, initiator = hs.start_join(
            self._nonce,
            cookie,
            self._relay_key,
            self._psk(),
            self._rng(DHLEN),
            self._join_nick,
            self._proven_resume(),
        )
        self._join_datagram = datagram
        self._handshakes.append(initiator)

    def _proven_resume(self) -> wire.Resume | None:
        """``resume`` with the proof for this JOIN's nonce (protocol.md 4.2)."""
        resume = self._resume
        if resume is None or not self._resume_secret:
            return resume
        return replace(resume, proof=hs.resume_proof(self._resume_secret, self._nonce))

    def _on_accept(self, accept: wire.Accept, now: float) -> None:
        link = self._link
        if link is not None and accept.token == link.token:
            return  # the same ACCEPT again, for a retransmitted JOIN
        if not self._in_handshake() or self._state is not SessionState.JOINING:
            self._unexpected += 1
            return
        if accept.nonce != self._nonce:
            self._wrong_session += 1
            return
        opened = self._read_accept(accept)
        if opened is None:
            self._malformed += 1  # not from the relay we encrypted to, or not for our JOIN
            return
        payload, keys = opened
        hint = self._hello_rtt
        if hint is None and self._handshake_sends == 1:
            hint = now - self._handshake_sent_at
        if hint is None and self._last_link_stats.srtt > 0:
            hint = self._last_link_stats.srtt
        self._join_unanswered = False
        self._adopt_link(Link(accept.token, self._link_config, rtt_hint=hint, keys=keys))
        self._link_resume_secret = hs.resume_secret(keys.send)
        self._epoch = payload.epoch
        self._reset_token = payload.reset_token
        self._heartbeat = max(payload.heartbeat_ms / 1000, MIN_HEARTBEAT)
        # Silence detection must outlast the heartbeat the relay asked for.
        self._silence = max(self.config.relay_silence, 2 * self._heartbeat)
        self._last_sent = self._last_heard = self._last_ping = now
        self._welcomed = False
        self._retry_at = None

    def _read_accept(self, accept: wire.Accept) -> tuple[wire.AcceptPayload, SessionKeys] | None:
        """The ACCEPT's payload and keys, from whichever of our handshakes it answers (the
        relay answers a retransmitted JOIN with the ACCEPT it made first)."""
        padded = self._room_key is not None
        for initiator in reversed(self._handshakes):
            try:
                return hs.finish_join(initiator, accept, padded)
            except (NoiseError, wire.DecodeError):
                continue
        return None

    def _adopt_link(self, link: Link) -> None:
        self._retire_link()
        self._link = link

    def _retire_link(self) -> None:
        old = self._link
        if old is not None:
            self._retired_replays += old.stats.replays
            self._retired_invalid += old.stats.invalid
            self._last_link_stats = old.stats
            self._link = None

    def _on_reject(self, reject: wire.Reject, now: float) -> None:
        self._join_unanswered = False
        code, reason = reject.code, reject.reason
        final = not self._ever_welcomed or code in _FINAL_REJECTS
        if code == wire.RejectCode.NICK_TAKEN and not final:
            candidate = self._suffixed_nick()
            if candidate is not None:
                self._emit(
                    ev.ErrorReported(f"the nickname {self.nick} is taken; trying {candidate}")
                )
                self.nick = candidate
                self._start_attempt(now)
                return
            final = True
        if final:
            self._emit(ev.JoinRejected(code, reason))
            self._close(reason or "the relay refused to let us in")
            return
        self._emit(ev.ErrorReported(reason or f"the relay refused the rejoin (code {code})"))
        self._schedule_attempt(now, immediate=False)

    def _suffixed_nick(self) -> str | None:
        """``nick_``, ``nick__``, ... cut to fit MAX_NICK_LENGTH; None when out of room."""
        if self._suffix_base is None:
            self._suffix_base = self.nick
        self._suffix_count += 1
        count = self._suffix_count
        if count >= MAX_NICK_LENGTH:
            return None
        candidate = self._suffix_base[: MAX_NICK_LENGTH - count] + "_" * count
        return candidate if nick_error(candidate) is None else None

    # --- receiving ----------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Take one datagram from the relay's address; garbage is counted, never raised."""
        if self._state in (SessionState.IDLE, SessionState.CLOSED):
            self._unexpected += 1
            return
        try:
            datagram = wire.decode_datagram(data)
        except wire.DecodeError:
            self._malformed += 1
            return
        if isinstance(datagram, wire.Protected):
            if datagram.kind is wire.DatagramType.PATH_RESPONSE:
                self._unexpected += 1  # only a relay receives those
            else:
                self._on_session_datagram(datagram, len(data), now)
        elif isinstance(datagram, wire.Reject):
            self._on_reject_datagram(datagram, now)
        elif isinstance(datagram, wire.Challenge):
            self._on_challenge(datagram, now)
        elif isinstance(datagram, wire.Accept):
            self._on_accept(datagram, now)
        elif isinstance(datagram, wire.Reset):
            self._on_reset(datagram, now)
        else:  # HELLO, JOIN: only a relay receives those
            self._unexpected += 1

    def _on_reset(self, reset: wire.Reset, now: float) -> None:
        """protocol.md 7.2: a RESET counts only with the reset token of our ACCEPT, which only
        the relay's identity can compute; anyone can copy a token off the wire."""
        link = self._link
        if link is None or reset.token != link.token:
            self._wrong_session += 1
            return
        if not hmac.compare_digest(reset.reset_token, self._reset_token):
            self._malformed += 1
            return
        self._session_reset = True  # whatever the epoch, our place is gone
        self._lose("the relay lost our session", now, immediate=True)

    def _on_reject_datagram(self, reject: wire.Reject, now: float) -> None:
        """protocol.md 4: a REJECT is ours only if it is bound to what we sent in this
        attempt: to our nonce, or to the hash of one of our HELLO or JOIN datagrams. Anything
        else may be forged by anyone who knows the relay's address, so it never ends a join:
        it is kept to be quoted if the join times out. (Someone on the path sees the nonce
        and can forge a bound REJECT; dropping our datagrams would end the join as well.)"""
        if not self._in_handshake():
            self._unexpected += 1
            return
        nonce = reject.nonce
        if nonce in self._sent_hashes or nonce == self._nonce:
            self._on_reject(reject, now)
            return
        self._wrong_session += 1
        self._unverified = reject.reason or f"refused with code {reject.code}"

    def _on_session_datagram(self, envelope: wire.Protected, size: int, now: float) -> None:
        link = self._link
        if link is None or envelope.token != link.token:
            self._wrong_session += 1
            return
        datagram = link.open(envelope)  # protocol.md 8: authenticated before anything else
        if datagram is None:
            return  # the link counted it
        delivered = link.receive(datagram, now)
        if delivered is None:
            return  # a replay or impossible ACK fields: the link counted it
        link.count_received(size)
        self._last_heard = now
        if isinstance(datagram, wire.PathChallenge):
            self._out.append(link.encode_path(wire.PathResponse, datagram.data))
        for data in delivered:
            if self._link is not link:
                break  # a SHUTDOWN ended this link; the rest belongs to it
            try:
                message = msg.decode_message(data)
            except wire.DecodeError:
                self._bad_messages += 1
                continue
            self._on_message(message, now)
        if self._link is link:
            self._after_link_progress(link)

    def _after_link_progress(self, link: Link) -> None:
        if link.idle:
            if self._log_token == link.token:
                self._log.clear()  # the relay holds every message we sent on this link
            if self._state is SessionState.LEAVING:
                self._close("left the room")

    # --- messages from the relay --------------------------------------------------------------

    def _on_message(self, message: msg.Message, now: float) -> None:
        if not self._welcomed:
            if isinstance(message, msg.Welcome) and self._state is SessionState.LEAVING:
                self._welcomed = True  # we quit before it came: nothing left to set up
            elif isinstance(message, msg.Welcome):
                self._on_welcome(message, now)
            else:
                self._bad_messages += 1  # WELCOME is always first (protocol.md 4)
            return
        if isinstance(message, msg.ChatMessage | msg.ActionMessage):
            self._on_chat(message)
        elif isinstance(message, msg.Joined | msg.Left | msg.NickChanged):
            self._on_membership(message)
        elif isinstance(message, msg.Posted | msg.Refused):
            self._on_answer(message, now)
        elif isinstance(message, msg.Private):
            self._end_catch_up()
            if nick_key(message.sender) == nick_key(self.nick):
                self._answered(msg.PrivateSend)  # the relay's copy of ours
            self._emit(
                ev.PrivateReceived(float(message.time), message.sender, message.to, message.text)
            )
        elif isinstance(message, msg.Members):
            self._end_catch_up()
            self._members = {nick_key(n): n for n in message.members}
            answered = self._answered(msg.Who)
            if answered is None or not answered.internal:
                self._emit(ev.MembersListed(self.members))
        elif isinstance(message, msg.Error):
            self._end_catch_up()
            answered = self._answered(None)
            request = answered.request if answered is not None else None
            self._emit(ev.ErrorReported(message.text or _SILENT_REFUSAL, request))
        elif isinstance(message, msg.Shutdown):
            link = self._link
            if link is not None:  # the relay waits for this ACK before it stops
                link.acknowledge_now()
                self._out.extend(link.datagrams_to_send(now))
            text = message.text or "no reason given"
            self._lose(f"the relay is shutting down: {text}", now)
        else:  # a second WELCOME, or a client-to-relay kind
            self._bad_messages += 1

    def _on_welcome(self, welcome: msg.Welcome, now: float) -> None:
        link = self._link
        assert link is not None
        rejoin = self._ever_welcomed
        resume = self._resume
        same_epoch = rejoin and self._seq_epoch == self._epoch
        # WELCOME.resumed counts messages of the stream named in our resume; it applies to
        # our log only if that is the stream the log was sent on.
        received = 0
        if same_epoch and resume is not None and resume.token == self._log_token:
            received = welcome.resumed
        self.nick = welcome.nick
        self._members = {nick_key(n): n for n in welcome.members}
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
        self._seq_epoch = self._epoch
        self._welcomed = True
        self._ever_welcomed = True
        self._attempt_deadline = None
        self._attempt = 0
        self._backoff = RECONNECT_FIRST_DELAY
        self._suffix_base = None
        self._suffix_count = 0
        self._rebase(received, link.token)
        self._transition(SessionState.JOINED)
        if rejoin:
            self._reconnects += 1
        kept_place = same_epoch and not self._session_reset
        self._session_reset = False
        self._emit(ev.Welcomed(self.nick, self.members, resumed=kept_place))
        self._feed(now)

    def _rebase(self, received: int, token: bytes) -> None:
        """Take stock of the old link's unconfirmed messages after WELCOME on a new one.

        The first ``received`` messages of the old stream reached the relay: its SAY and
        ACTION whose answers were lost go to limbo. The rest are sent again, but only once
        catch-up history is over: if the relay had already forgotten the old session,
        ``received`` is 0 although it may have posted some of them, and history shows which.
        """
        resend = [o for o in self._log if o.index >= received]
        resend.extend(self._resend)  # held back by a catch-up that a new loss cut short
        resent = {id(o) for o in resend}
        self._limbo.extend(o for o in self._awaiting if id(o) not in resent)
        self._resend = deque(resend)
        self._awaiting.clear()
        self._log.clear()
        self._answers.clear()
        self._sent_count = 0
        self._log_token = token
        self._catching_up = bool(self._limbo or self._resend)
        if self._catching_up:
            # Its MEMBERS answer comes after all history: the end of catch-up at the latest.
            barrier = msg.Who()
            self._hand(_Outgoing(barrier, msg.encode_message(barrier), internal=True))

    def _answered(self, kind: type[msg.ClientMessage] | None) -> _Outgoing | None:
        """Take the oldest request still due an answer, if it is of ``kind`` (None: any)."""
        if self._answers and (kind is None or isinstance(self._answers[0].message, kind)):
            return self._answers.popleft()
        return None

    def _advance_seq(self, seq: int) -> None:
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

    def _note_room_event(self, seq: int) -> bool:
        """Account a room event's sequence number; return whether it is history."""
        history = seq <= self._welcome_seq
        if not history:
            self._end_catch_up()
        self._advance_seq(seq)
        return history

    def _on_chat(self, event: msg.ChatMessage | msg.ActionMessage) -> None:
        history = self._note_room_event(event.seq)
        action = isinstance(event, msg.ActionMessage)
        own = nick_key(event.nick) == nick_key(self.nick)
        local_id = None
        if own and history and self._match_above is not None and event.seq > self._match_above:
            confirmed = self._confirm_own(action, event.text)
            if confirmed is not None:
                local_id = confirmed.local_id
        if history and local_id is None:
            own = False  # the same nickname in an earlier session, maybe somebody else's
        self._emit(
            ev.MessageReceived(
                event.seq,
                float(event.time),
                event.nick,
                event.text,
                action=action,
                own=own,
                history=history,
                local_id=local_id,
            )
        )

    def _confirm_own(self, action: bool, text: str) -> _Outgoing | None:
        """The message of ours that a history event shows posted, in stream order.

        The relay handles a stream in order, so every message before the match reached it
        too: SAY and ACTION among them that history does not show were not posted, and none
        of them is sent again.
        """
        for queue in (self._limbo, self._resend):
            for position, entry in enumerate(queue):
                if _chat_kind(entry.message) == (action, text):
                    if queue is self._resend:
                        self._fail_unconfirmed(self._limbo, _UNCONFIRMED)
                        self._limbo.clear()
                    skipped = [queue.popleft() for _ in range(position)]
                    self._fail_unconfirmed(skipped, _UNCONFIRMED)
                    return queue.popleft()
        return None

    def _end_catch_up(self) -> None:
        """Catch-up history is over: limbo messages it did not show were not posted, and
        what the relay did not receive goes out again, ahead of anything typed since."""
        if not self._catching_up:
            return
        self._catching_up = False
        self._fail_unconfirmed(self._limbo, _UNCONFIRMED)
        self._limbo.clear()
        self._outbox.extendleft(reversed(self._resend))
        self._resend.clear()  # fed to the link at the next datagrams_to_send

    def _fail_unconfirmed(self, entries: Iterable[_Outgoing], reason: str) -> None:
        for entry in entries:
            kind = _chat_kind(entry.message)
            if entry.local_id is not None and kind is not None:
                self._emit(ev.MessageRefused(entry.local_id, kind[1], reason))

    def _on_membership(self, event: msg.Joined | msg.Left | msg.NickChanged) -> None:
        history = self._note_room_event(event.seq)
        time = float(event.time)
        if isinstance(event, msg.Joined):
            if not history:
                self._members[nick_key(event.nick)] = event.nick
            self._emit(ev.MemberJoined(event.seq, time, event.nick, history=history))
        elif isinstance(event, msg.Left):
            if not history:
                self._members.pop(nick_key(event.nick), None)
            reason = _LEAVE_REASONS.get(event.reason, "left")
            self._emit(
                ev.MemberLeft(event.seq, time, event.nick, reason, event.text, history=history)
            )
        else:
            mine = nick_key(self.nick)
            own = nick_key(event.old) == mine or (history and nick_key(event.new) == mine)
            if not history:
                self._members.pop(nick_key(event.old), None)
                self._members[nick_key(event.new)] = event.new
                if own:
                    self._answered(msg.NickRequest)
                    self.nick = event.new
            self._emit(ev.NickChanged(event.seq, time, event.old, event.new, own, history))

    def _on_answer(self, answer: msg.Posted | msg.Refused, now: float) -> None:
        self._end_catch_up()
        if not self._awaiting:
            self._bad_messages += 1  # an answer to nothing we sent
            return
        entry = self._awaiting.popleft()
        while self._log and self._log[0].index <= entry.index:
            self._log.popleft()  # the relay processed these, in order
        kind = _chat_kind(entry.message)
        assert kind is not None and entry.local_id is not None
        action, text = kind
        if isinstance(answer, msg.Refused):
            self._emit(ev.MessageRefused(entry.local_id, text, answer.text or _SILENT_REFUSAL))
            return
        self._advance_seq(answer.seq)
        self._emit(
            ev.MessageReceived(
                answer.seq,
                now + self._wall_offset,
                self.nick,
                text,
                action=action,
                own=True,
                local_id=entry.local_id,
            )
        )

    # --- losing and rejoining -----------------------------------------------------------------

    def _lose(self, reason: str, now: float, immediate: bool = False) -> None:
        """The relay is gone (silence, dead link, RESET, SHUTDOWN): rejoin or close."""
        if self._state is SessionState.LEAVING:
            self._close("left the room")
            return
        link = self._link
        if link is not None:
            last_seq = self._last_seq if self._seq_epoch == self._epoch else 0
            self._resume = wire.Resume(self._epoch, link.token, last_seq)
            self._resume_secret = self._link_resume_secret
        self._retire_link()
        self._welcomed = False
        if not self._ever_welcomed:
            # Lost during the first join: try again within the same join deadline.
            self._start_attempt(now)
            return
        self._emit(ev.ConnectionLost(reason))
        if not self.config.reconnect:
            self._close(reason)
            return
        self._schedule_attempt(now, immediate)

    def _schedule_attempt(self, now: float, immediate: bool) -> None:
        self._retire_link()
        self._attempt += 1
        delay = 0.0
        if not immediate:
            delay = min(self._backoff, self.config.max_reconnect_delay)
            self._backoff = min(self._backoff * 2, self.config.max_reconnect_delay)
        self._reconnect_at = now + delay
        self._retry_at = None
        self._attempt_deadline = None
        self._transition(SessionState.RECONNECTING)
        self._emit(ev.Reconnecting(self._attempt, delay))

    def _attempt_failed(self, now: float) -> None:
        if not self._ever_welcomed:
            reason = "the relay does not answer (check the address and port)"
            if self._unverified is not None:
                reason += f"; an unverifiable reply said: {self._unverified}"
            self._close(reason)
            return
        link = self._link
        if link is not None:  # ACCEPT came but WELCOME did not: resume that session next
            last_seq = self._last_seq if self._seq_epoch == self._epoch else 0
            self._resume = wire.Resume(self._epoch, link.token, last_seq)
            self._resume_secret = self._link_resume_secret
        self._schedule_attempt(now, immediate=False)

    def _close(self, reason: str) -> None:
        self._fail_unconfirmed(self._limbo, _CLOSED_UNCONFIRMED)
        self._fail_unconfirmed(self._resend, _CLOSED_UNCONFIRMED)
        self._fail_unconfirmed(self._awaiting, _CLOSED_UNCONFIRMED)
        self._fail_unconfirmed(self._outbox, _CLOSED_UNCONFIRMED)
        for queue in (self._limbo, self._resend, self._awaiting, self._outbox, self._log):
            queue.clear()
        self._retire_link()
        self._transition(SessionState.CLOSED)
        self._emit(ev.Closed(reason))

    # --- output and timers --------------------------------------------------------------------

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Everything due now (the link seals what it sends)."""
        handshake, self._handshake_out = self._handshake_out, []  # ready as they are
        out, self._out = self._out, []
        link = self._link
        if link is not None and self._state in (_S.JOINING, _S.JOINED, _S.LEAVING):
            self._feed(now)
            sent = link.datagrams_to_send(now)
            if sent:
                self._last_sent = now
                out.extend(sent)
        return handshake + out if handshake else out

    def _heartbeat_due(self) -> float:
        """protocol.md 7.1: PING after ``heartbeat`` without sending; after ``heartbeat``
        without hearing, probe every quarter of it."""
        beat = self._heartbeat
        quiet = max(self._last_sent, self._last_ping) + beat
        probe = max(self._last_heard + beat, self._last_ping + beat / 4)
        return min(quiet, probe)

    def next_timer(self) -> float | None:
        """The earliest time at which ``handle_timer`` has work, or None."""
        state = self._state
        if state in (SessionState.IDLE, SessionState.CLOSED):
            return None
        if self._out or self._handshake_out:
            return ASAP
        deadlines: list[float | None] = []
        if state in (SessionState.CONNECTING, SessionState.JOINING):
            deadlines.append(self._attempt_deadline)
        if state is SessionState.RECONNECTING:
            deadlines.append(self._reconnect_at)
        link = self._link
        if link is None:
            if state in (SessionState.CONNECTING, SessionState.JOINING):
                deadlines.append(self._retry_at)
        else:
            deadlines.append(link.next_timer())
            deadlines.append(self._heartbeat_due())
            deadlines.append(self._last_heard + self._silence)
            if state is SessionState.LEAVING:
                deadlines.append(self._quit_deadline)
            deadlines.append(self._pace_at)
        due = [d for d in deadlines if d is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        """Do whatever is due at ``now``: retransmit, ping, give up, rejoin, close."""
        state = self._state
        if state in (SessionState.IDLE, SessionState.CLOSED):
            return
        link = self._link
        if link is not None:
            link.handle_timer(now)
            if link.dead:
                self._lose("the relay stopped acknowledging", now)
                return
            if now >= self._last_heard + self._silence:
                self._lose("the relay went silent", now)
                return
            quit_deadline = self._quit_deadline
            if state is SessionState.LEAVING and quit_deadline is not None and now >= quit_deadline:
                self._close("left the room (the relay did not confirm)")
                return
            if now >= self._heartbeat_due():
                link.ping()
                self._last_ping = now
        if state in (_S.CONNECTING, _S.JOINING):
            if self._attempt_deadline is not None and now >= self._attempt_deadline:
                self._attempt_failed(now)
                return
            if link is None and self._retry_at is not None and now >= self._retry_at:
                self._send_handshake(now, first=False)
        elif (
            state is SessionState.RECONNECTING
            and self._reconnect_at is not None
            and now >= self._reconnect_at
        ):
            self._reconnect_at = None
            self._start_attempt(now)
