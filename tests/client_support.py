"""Shared helpers for the client session tests: a scripted relay, simulated networks with the
real relay core, and the events each session emitted (the simulator drives sessions directly)."""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from udpchat import events as ev
from udpchat import handshake as hs
from udpchat import messages as msg
from udpchat import wire
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.link import Link
from udpchat.names import nick_key
from udpchat.noise import NoiseError, public_key
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.seal import PskDeriver
from udpchat.sim import PathModel, SimNetwork


def without_ids(messages: list[msg.Message]) -> list[msg.Message]:
    """Messages as compared in these tests: the random message ids left out."""
    return [
        replace(m, msgid=b"") if isinstance(m, (msg.Say, msg.Action, msg.PrivateSend)) else m
        for m in messages
    ]


RELAY: Address = ("10.0.0.1", 4000)
RELAY_STATIC = bytes(range(100, 132))  # the relay's identity, kept across restarts
TIME = 1_790_000_000
EPOCH = b"epoch-01"


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


# --- a scripted relay -------------------------------------------------------------------------


@dataclass
class FakeSession:
    token: bytes
    nick: str
    addr: Address
    link: Link
    accept: bytes
    received: list[msg.Message] = field(default_factory=list)
    heard: bool = False


class FakeRelay:
    """Enough of a relay to drive a client, with knobs to make it misbehave."""

    def __init__(self, epoch: bytes = EPOCH, heartbeat_ms: int = 1000) -> None:
        self.epoch = epoch
        self.heartbeat_ms = heartbeat_ms
        self.cookie = b"cookie-0123456789"
        self.static_key = bytes(range(32))
        self.room_key: PskDeriver | None = None
        self.reset_secret = hs.reset_secret(self.static_key)
        self.sessions: dict[bytes, FakeSession] = {}
        self.by_nonce: dict[bytes, FakeSession] = {}
        self.closing: list[FakeSession] = []
        self.history: list[msg.RoomEvent] = []
        self.seq = 0
        self.answer_handshake = True
        self.reject: tuple[int, str] | None = None
        self.refuse_next = 0
        self.reset_unknown = True
        # handshake datagrams as they came, session datagrams opened
        self.datagrams: list[tuple[float, wire.Datagram | wire.SessionDatagram]] = []
        self.joins: list[wire.JoinPayload] = []
        self._out: list[tuple[bytes, Address]] = []
        self._tokens = random.Random(99)

    # the Node protocol
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        datagram = wire.decode_datagram(data)
        if not isinstance(datagram, wire.Protected):
            self.datagrams.append((now, datagram))
        if isinstance(datagram, wire.Hello):
            if self.answer_handshake:
                challenge = wire.encode_challenge(
                    datagram.nonce,
                    self.cookie,
                    public_key(self.static_key),
                    self.room_key is not None,
                )
                self._out.append((challenge, addr))
        elif isinstance(datagram, wire.Join):
            if self.answer_handshake:
                self._on_join(datagram, data, addr)
        elif isinstance(datagram, wire.Protected):
            session = self.sessions.get(datagram.token)
            if session is None:
                if self.reset_unknown:
                    proof = hs.reset_token(self.reset_secret, datagram.token)
                    self._out.append((wire.encode_reset(datagram.token, proof), addr))
                return
            opened = session.link.open(datagram)
            assert opened is not None, "the client sealed it with the session's key"
            self.datagrams.append((now, opened))
            session.heard = True
            session.addr = addr
            if isinstance(opened, wire.PathResponse):
                return
            for data_ in session.link.receive(opened, now) or []:
                self._on_message(session, msg.decode_message(data_))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        for session in [*self.sessions.values(), *self.closing]:
            out.extend((d, session.addr) for d in session.link.datagrams_to_send(now))
        self.closing = [s for s in self.closing if not s.link.idle]
        return out

    def next_timer(self) -> float | None:
        timers = [s.link.next_timer() for s in self.sessions.values()]
        due = [t for t in timers if t is not None]
        return min(due) if due else None

    def handle_timer(self, now: float) -> None:
        for session in list(self.sessions.values()):
            session.link.handle_timer(now)
            if session.link.dead:
                del self.sessions[session.token]

    # scripting helpers
    def send(self, session: FakeSession, message: msg.Message) -> None:
        session.link.send(msg.encode_message(message))

    def broadcast(self, message: msg.Message, skip: FakeSession | None = None) -> None:
        for session in self.sessions.values():
            if session is not skip:
                self.send(session, message)

    def room_event(self, make: Callable[[int], msg.RoomEvent]) -> msg.RoomEvent:
        self.seq += 1
        event = make(self.seq)
        self.history.append(event)
        return event

    def restart(self, epoch: bytes) -> None:
        """Lose every session and the history, as a new relay process would."""
        self.epoch = epoch
        self.sessions.clear()
        self.by_nonce.clear()
        self.history.clear()
        self.seq = 0

    def only_session(self) -> FakeSession:
        (session,) = self.sessions.values()
        return session

    # protocol
    def _on_join(self, request: wire.Join, data: bytes, addr: Address) -> None:
        known = self.by_nonce.get(request.nonce)
        if known is not None and not known.heard:
            self._out.append((known.accept, addr))
            return
        psk = None if self.room_key is None else self.room_key(public_key(self.static_key))
        try:
            responder, join = hs.read_join(self.static_key, request, psk)
        except NoiseError:
            bad_key = wire.RejectCode.BAD_KEY
            reject = wire.encode_reject(wire.request_hash(data), bad_key, "wrong room key")
            self._out.append((reject, addr))
            return
        self.joins.append(join)
        if self.reject is not None:
            code, reason = self.reject
            self._out.append((wire.encode_reject(request.nonce, code, reason), addr))
            return
        resume = join.resume
        same_epoch = resume is not None and resume.epoch == self.epoch
        old = self.sessions.pop(resume.token, None) if resume is not None and same_epoch else None
        taken = {nick_key(s.nick) for s in self.sessions.values()}
        if nick_key(join.nick) in taken:
            self._out.append(
                (wire.encode_reject(request.nonce, wire.RejectCode.NICK_TAKEN, "taken"), addr)
            )
            return
        token = self._tokens.randbytes(8)
        payload = wire.AcceptPayload(
            self.epoch, self.heartbeat_ms, 10_000, hs.reset_token(self.reset_secret, token)
        )
        accept, keys = hs.accept(
            responder, request.nonce, token, payload, self._tokens.randbytes(32), psk is not None
        )
        nick = old.nick if old is not None else join.nick
        session = FakeSession(token, nick, addr, Link(token, keys=keys), accept)
        members = (*(s.nick for s in self.sessions.values()), nick)
        resumed = len(old.received) if old is not None else 0
        self.send(session, msg.Welcome(nick, members, self.seq, 1, resumed, len(members)))
        catch_up: list[msg.RoomEvent]
        if same_epoch and resume is not None:
            catch_up = [e for e in self.history if e.seq > resume.last_seq]
        else:
            chat = (msg.ChatMessage, msg.ActionMessage)
            catch_up = [e for e in self.history if type(e) in chat][-20:]
        for event in catch_up:
            self.send(session, event)
        if old is None:
            joined = self.room_event(lambda seq: msg.Joined(seq, TIME, nick))
            self.broadcast(joined)
        self.sessions[token] = session
        self.by_nonce[request.nonce] = session
        self._out.append((accept, addr))

    def _on_message(self, session: FakeSession, message: msg.Message) -> None:
        session.received.append(message)
        if isinstance(message, (msg.Say, msg.Action)):
            if self.refuse_next:
                self.refuse_next -= 1
                self.send(session, msg.Refused("slow down"))
                return
            if isinstance(message, msg.Say):
                text = message.text
                event: msg.RoomEvent = self.room_event(
                    lambda seq: msg.ChatMessage(seq, TIME, session.nick, text)
                )
            else:
                text = message.text
                event = self.room_event(
                    lambda seq: msg.ActionMessage(seq, TIME, session.nick, text)
                )
            self.send(session, msg.Posted(event.seq))
            self.broadcast(event, skip=session)
        elif isinstance(message, msg.Who):
            self.send(session, msg.Members(tuple(s.nick for s in self.sessions.values())))
        elif isinstance(message, msg.NickRequest):
            old, new = session.nick, message.nick
            session.nick = new
            self.broadcast(self.room_event(lambda seq: msg.NickChanged(seq, TIME, old, new)))
        elif isinstance(message, msg.PrivateSend):
            for other in self.sessions.values():
                if other.nick == message.to or other is session:
                    self.send(other, msg.Private(TIME, session.nick, message.to, message.text))
        elif isinstance(message, msg.Quit):
            del self.sessions[session.token]
            self.closing.append(session)
            left = self.room_event(lambda seq: msg.Left(seq, TIME, session.nick, 0, message.reason))
            self.broadcast(left)


# --- sessions on a simulated network ----------------------------------------------------------


def client_addr(i: int) -> Address:
    return (f"10.0.1.{i + 1}", 5000 + i)


def make_net(
    nicks: tuple[str, ...] = ("alice",),
    model: PathModel | None = None,
    relay: FakeRelay | None = None,
    seed: int = 1,
    **config: object,
) -> tuple[SimNetwork, FakeRelay, list[ClientSession]]:
    net = SimNetwork(seed=seed, default=model or PathModel(delay=0.01))
    relay = relay or FakeRelay()
    net.attach(RELAY, relay)
    sessions = []
    for i, nick in enumerate(nicks):
        client_config = ClientConfig(nick, RELAY, **config)  # type: ignore[arg-type]
        session = ClientSession(client_config, seeded(seed * 100 + i), net.now)
        net.attach(client_addr(i), session)
        sessions.append(session)
    return net, relay, sessions


def join_all(net: SimNetwork, nodes: list[ClientSession], timeout: float = 5) -> None:
    for node in nodes:
        node.connect(net.now)
        assert net.run_until(lambda n=node: n.state is SessionState.JOINED, timeout)  # type: ignore[misc]


def client_datagrams(
    relay: FakeRelay, kind: type[object]
) -> list[tuple[float, wire.Datagram | wire.SessionDatagram]]:
    return [(t, d) for t, d in relay.datagrams if isinstance(d, kind)]


def client_messages(session: FakeSession) -> list[msg.Message]:
    return session.received


def relay_net(
    nicks: tuple[str, ...],
    model: PathModel | None = None,
    seed: int = 1,
    relay_config: RelayConfig | None = None,
    **config: object,
) -> tuple[SimNetwork, RelayCore, list[ClientSession]]:
    net = SimNetwork(seed=seed, default=model or PathModel(delay=0.005))
    relay = RelayCore(
        relay_config or RelayConfig(),
        net.now,
        seeded(seed),
        wall_offset=TIME,
        static_key=RELAY_STATIC,
    )
    net.attach(RELAY, relay)
    sessions = []
    for i, nick in enumerate(nicks):
        client_config = ClientConfig(nick, RELAY, **config)  # type: ignore[arg-type]
        session = ClientSession(client_config, seeded(seed * 100 + i), net.now, wall_offset=TIME)
        net.attach(client_addr(i), session)
        sessions.append(session)
    return net, relay, sessions


def keyed_net(room_key: PskDeriver | None, seed: int = 4) -> tuple[SimNetwork, RelayCore]:
    """A relay core with ``room_key`` (or none) on a simulated network."""
    net = SimNetwork(seed=seed, default=PathModel(delay=0.005))
    relay = RelayCore(
        RelayConfig(), net.now, seeded(seed), TIME, room_key=room_key, static_key=RELAY_STATIC
    )
    net.attach(RELAY, relay)
    return net, relay


def keyed_member(net: SimNetwork, i: int, nick: str, room_key: PskDeriver | None) -> ClientSession:
    session = ClientSession(ClientConfig(nick, RELAY), seeded(10 + i), net.now, room_key, TIME)
    net.attach(client_addr(i), session)
    return session


def chat_log(node: ClientSession) -> list[tuple[int, str, str]]:
    """What a member saw of the room, live, in the order it was shown."""
    return [
        (e.seq, e.nick, e.text)
        for e in of(node, ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and not e.history
    ]


def handshake_traffic(net: SimNetwork, client: Address) -> list[tuple[bool, int | None]]:
    """(sealed, type) of every datagram ``client`` sends, as an observer sees it (type None:
    not a datagram of ours)."""
    seen: list[tuple[bool, int | None]] = []

    def tap(src: Address, dst: Address, data: bytes) -> None:
        if src == client:
            seen.append((wire.datagram_type(data) in wire.SESSION_TYPES, wire.datagram_type(data)))

    net.taps.append(tap)
    return seen


# --- what a session emitted and sent ----------------------------------------------------------

# The simulator drives sessions directly; the events each emitted are kept here between looks.
_seen: weakref.WeakKeyDictionary[ClientSession, list[ev.ClientEvent]] = weakref.WeakKeyDictionary()


def _collected(session: ClientSession) -> list[ev.ClientEvent]:
    """Every event ``session`` emitted since the last ``drain``, in order."""
    seen = _seen.setdefault(session, [])
    seen.extend(session.events())
    return seen


def drain(session: ClientSession) -> list[ev.ClientEvent]:
    """The events since the last ``drain``, forgotten once returned."""
    out = list(_collected(session))
    _seen[session] = []
    return out


def of(session: ClientSession, kind: type[ev.ClientEvent]) -> list[ev.ClientEvent]:
    """The events of ``kind`` since the last ``drain`` (kept for the next look)."""
    return [e for e in _collected(session) if isinstance(e, kind)]


def payloads(session: ClientSession, now: float) -> list[bytes]:
    """What ``session`` sends at ``now``: every datagram goes to the relay."""
    out = session.datagrams_to_send(now)
    assert all(addr == RELAY for _, addr in out)
    return [data for data, _ in out]
