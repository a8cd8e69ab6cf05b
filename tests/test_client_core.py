"""The client session against a scripted relay, on a simulated network with a virtual clock."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakeclient import quick_room_key, random_keys
from udpchat import events as ev
from udpchat import handshake as hs
from udpchat import messages as msg
from udpchat import wire
from udpchat.client_core import (
    TRANSITIONS,
    ClientConfig,
    ClientSession,
    LocalProtocolError,
    QueueFull,
    SessionState,
)
from udpchat.link import Link, LinkConfig
from udpchat.names import nick_key
from udpchat.noise import NoiseError, public_key
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.seal import PskDeriver, room_key
from udpchat.sim import Address, PathModel, SimNetwork


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
        self.datagrams: list[tuple[float, object]] = []
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
        self.send(session, msg.Welcome(nick, members, self.seq, 1, resumed))
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


class ClientNode:
    """A ClientSession as a simulator node, keeping every event it emitted."""

    def __init__(self, session: ClientSession, relay: Address = RELAY) -> None:
        self.session = session
        self.relay = relay
        self.seen: list[ev.ClientEvent] = []

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.session.receive_datagram(data, now)
        self.seen.extend(self.session.events())

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return [(d, self.relay) for d in self.session.datagrams_to_send(now)]

    def next_timer(self) -> float | None:
        return self.session.next_timer()

    def handle_timer(self, now: float) -> None:
        self.session.handle_timer(now)
        self.seen.extend(self.session.events())

    def drain(self) -> list[ev.ClientEvent]:
        self.seen.extend(self.session.events())
        out, self.seen = self.seen, []
        return out

    def of(self, kind: type[ev.ClientEvent]) -> list[ev.ClientEvent]:
        self.seen.extend(self.session.events())
        return [e for e in self.seen if isinstance(e, kind)]


def client_addr(i: int) -> Address:
    return (f"10.0.1.{i + 1}", 5000 + i)


def make_net(
    nicks: tuple[str, ...] = ("alice",),
    model: PathModel | None = None,
    relay: FakeRelay | None = None,
    seed: int = 1,
    **config: object,
) -> tuple[SimNetwork, FakeRelay, list[ClientNode]]:
    net = SimNetwork(seed=seed, default=model or PathModel(delay=0.01))
    relay = relay or FakeRelay()
    net.attach(RELAY, relay)
    nodes = []
    for i, nick in enumerate(nicks):
        session = ClientSession(ClientConfig(nick, **config), seeded(seed * 100 + i), net.now)  # type: ignore[arg-type]
        node = ClientNode(session)
        net.attach(client_addr(i), node)
        nodes.append(node)
    return net, relay, nodes


def join_all(net: SimNetwork, nodes: list[ClientNode], timeout: float = 5) -> None:
    for node in nodes:
        node.session.connect(net.now)
        assert net.run_until(lambda n=node: n.session.state is SessionState.JOINED, timeout)  # type: ignore[misc]


def client_datagrams(relay: FakeRelay, kind: type[object]) -> list[tuple[float, wire.Datagram]]:
    return [(t, d) for t, d in relay.datagrams if isinstance(d, kind)]


def client_messages(session: FakeSession) -> list[msg.Message]:
    return session.received


# --- handshake --------------------------------------------------------------------------------


def test_handshake_pads_hello_and_join_and_ends_welcomed() -> None:
    net, relay, (alice,) = make_net()
    sizes: list[tuple[int, int]] = []
    net.taps.append(lambda src, dst, data: sizes.append((data[2], len(data))))
    alice.session.connect(net.now)
    assert alice.session.state is SessionState.CONNECTING
    assert net.run_until(lambda: alice.session.state is SessionState.JOINED, 1)
    assert (wire.DatagramType.HELLO, 1200) in sizes
    assert (wire.DatagramType.JOIN, 1200) in sizes
    welcomed = alice.of(ev.Welcomed)
    assert welcomed == [ev.Welcomed("alice", ("alice",), resumed=False)]
    assert alice.session.members == ("alice",)
    assert relay.joins[0].resume is None
    # HELLO -> CHALLENGE took 20 ms: the link starts from that sample, not from 100 ms.
    assert alice.session.stats.srtt == pytest.approx(0.02, abs=0.005)


def test_hello_retransmits_doubling_to_2s_then_join_times_out() -> None:
    net, relay, (alice,) = make_net()
    relay.answer_handshake = False
    alice.session.connect(net.now)
    net.run(12)
    hellos = client_datagrams(relay, wire.Hello)
    times = [round(t - 0.01, 3) for t, _ in hellos]
    assert times == [0.0, 0.25, 0.75, 1.75, 3.75, 5.75, 7.75, 9.75]
    assert len({d.nonce for _, d in hellos if isinstance(d, wire.Hello)}) == 1
    closed = alice.of(ev.Closed)
    assert len(closed) == 1 and isinstance(closed[0], ev.Closed)
    assert "the relay does not answer" in closed[0].reason
    assert "room key" not in closed[0].reason
    assert alice.session.state is SessionState.CLOSED
    assert alice.session.next_timer() is None


def test_join_timeout_with_a_room_key() -> None:
    """Nothing answers: the HELLO went out in the clear, nothing was derived or sealed."""
    derived: list[bytes] = []

    def room_key(relay_key: bytes) -> bytes:
        derived.append(relay_key)
        return quick_room_key(b"k")(relay_key)

    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0, room_key=room_key)
    session.connect(0.0)
    (hello,) = session.datagrams_to_send(0.0)
    assert len(hello) == wire.MIN_INITIAL_SIZE
    assert isinstance(wire.decode_datagram(hello), wire.Hello)
    now = 0.0
    for _ in range(100):
        deadline = session.next_timer()
        if deadline is None:
            break
        now = max(now, deadline)
        session.handle_timer(now)
        session.datagrams_to_send(now)
    (closed,) = [e for e in session.events() if isinstance(e, ev.Closed)]
    assert closed.reason == "the relay does not answer (check the address and port)"
    assert now == pytest.approx(10.0)
    assert derived == []


def test_join_is_retransmitted_and_a_lost_accept_is_recovered() -> None:
    net, relay, (alice,) = make_net()
    dropped: list[bytes] = []
    original = net.send

    def drop_first_accept(src: Address, dst: Address, data: bytes) -> None:
        if src == RELAY and data[2] == wire.DatagramType.ACCEPT and not dropped:
            dropped.append(data)
            return
        original(src, dst, data)

    net.send = drop_first_accept  # type: ignore[method-assign]
    join_all(net, [alice])
    joins = client_datagrams(relay, wire.Join)
    assert len(joins) == 2
    assert joins[1][0] - joins[0][0] == pytest.approx(0.25)
    assert len(relay.sessions) == 1  # the same JOIN got the same ACCEPT


def test_first_join_reject_is_final() -> None:
    net, relay, (alice,) = make_net()
    relay.reject = (wire.RejectCode.RELAY_FULL, "the room is full")
    alice.session.connect(net.now)
    net.run(30)
    assert alice.drain() == [
        ev.JoinRejected(wire.RejectCode.RELAY_FULL, "the room is full"),
        ev.Closed("the room is full"),
    ]
    assert len(client_datagrams(relay, wire.Join)) == 1


def test_reject_with_a_foreign_nonce_is_ignored() -> None:
    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0)
    session.connect(0.0)
    session.receive_datagram(wire.encode_reject(b"x" * 8, 1, "go away"), 0.01)
    assert session.state is SessionState.CONNECTING
    assert session.stats.wrong_session == 1
    assert session.events() == []


def test_a_plain_reject_is_ours_only_when_bound_to_a_datagram_we_sent() -> None:
    """protocol.md 4: anyone who knows the relay's address can send a REJECT; only one bound
    to our nonce or to a datagram of ours ends the join, and never one without a nonce."""
    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0, quick_room_key(b"k"))
    session.connect(0.0)
    (hello,) = session.datagrams_to_send(0.0)
    inner = wire.decode_datagram(hello)
    assert isinstance(inner, wire.Hello)
    bad_key = wire.RejectCode.BAD_KEY
    # No nonce at all: not even a valid datagram.
    session.receive_datagram(wire.pack([2, wire.DatagramType.REJECT, b"", bad_key, "x"]), 0.01)
    assert session.stats.malformed == 1
    # A made-up nonce: not proof that the relay sent it.
    session.receive_datagram(wire.encode_reject(b"x" * 8, bad_key, "x"), 0.01)
    assert session.stats.wrong_session == 1
    assert session.state is SessionState.CONNECTING
    assert session.events() == []
    # Bound to the HELLO we sent: the relay's answer.
    reject = wire.encode_reject(wire.request_hash(hello), bad_key, "wrong room key")
    session.receive_datagram(reject, 0.02)
    assert session.events() == [
        ev.JoinRejected(wire.RejectCode.BAD_KEY, "wrong room key"),
        ev.Closed("wrong room key"),
    ]


def test_a_reject_bound_to_our_nonce_is_ours() -> None:
    """Only the relay, or someone on the path who could as well drop our datagrams, knows
    the nonce (protocol.md 9)."""
    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0)
    session.connect(0.0)
    (hello,) = session.datagrams_to_send(0.0)
    inner = wire.decode_datagram(hello)
    assert isinstance(inner, wire.Hello)
    session.receive_datagram(wire.encode_reject(inner.nonce, 3, "the relay is full"), 0.01)
    assert session.events() == [
        ev.JoinRejected(3, "the relay is full"),
        ev.Closed("the relay is full"),
    ]


def _challenge(nonce: bytes, cookie: bytes, relay_key: bytes, keyed: bool = True) -> bytes:
    return wire.encode_challenge(nonce, cookie, relay_key, keyed)


def test_one_psk_per_relay_key_and_one_handshake_per_cookie() -> None:
    """scrypt is slow on purpose: CHALLENGEs with other relay keys during the JOIN (only
    someone on the path can send them) derive nothing; a fresh cookie from the same relay
    starts a new handshake with the cached psk; a retransmitted JOIN is the same bytes, so
    that the relay's stored ACCEPT answers it."""
    derived: list[bytes] = []
    real = quick_room_key(b"k")

    def counting(relay_key: bytes) -> bytes:
        derived.append(relay_key)
        return real(relay_key)

    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0, counting)
    session.connect(0.0)
    (hello,) = session.datagrams_to_send(0.0)
    hello_datagram = wire.decode_datagram(hello)
    assert isinstance(hello_datagram, wire.Hello)
    nonce = hello_datagram.nonce
    relay_key = public_key(bytes(range(32)))
    session.receive_datagram(_challenge(nonce, b"c" * 20, relay_key), 0.01)
    (join,) = session.datagrams_to_send(0.01)
    assert len(join) == wire.MIN_INITIAL_SIZE
    session.receive_datagram(_challenge(nonce, b"e" * 20, relay_key), 0.03)
    (again,) = session.datagrams_to_send(0.03)
    retry = session.next_timer()
    assert retry is not None
    session.handle_timer(retry)
    (retransmitted,) = session.datagrams_to_send(retry)
    assert join != again and retransmitted == again
    assert derived == [relay_key]
    # Another relay key: taken once per HELLO (a relay restarted as another identity).
    others = [public_key(bytes([i + 1]) * 32) for i in range(5)]
    for other in others:
        session.receive_datagram(_challenge(nonce, b"d" * 20, other), 0.5)
    assert len(session.datagrams_to_send(0.5)) == 1
    assert session.stats.unexpected == 4
    assert derived == [relay_key, others[0]]


def test_a_relay_key_the_trust_callback_refuses_ends_the_join() -> None:
    """The shell's pin check: its refusal is final and no JOIN is sent to that relay."""
    seen: list[bytes] = []

    def pinned(relay_key: bytes) -> str | None:
        seen.append(relay_key)
        return "the relay's key changed"

    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0, trust=pinned)
    session.connect(0.0)
    (hello,) = session.datagrams_to_send(0.0)
    hello_datagram = wire.decode_datagram(hello)
    assert isinstance(hello_datagram, wire.Hello)
    relay_key = public_key(bytes(range(32)))
    session.receive_datagram(_challenge(hello_datagram.nonce, b"c" * 20, relay_key, False), 0.01)
    assert session.datagrams_to_send(0.01) == []
    assert session.events() == [ev.Closed("the relay's key changed")]
    assert seen == [relay_key]


@pytest.mark.parametrize("bad_key", [bytes(32), bytes([1]) + bytes(31)])
def test_a_challenge_with_an_unusable_relay_key_is_ignored_not_trusted(bad_key: bytes) -> None:
    """A low-order point (or a short key) on the path: no exception, not shown to the trust
    check (which would remember it), and the join goes on with the real CHALLENGE."""
    seen: list[bytes] = []

    def trust(relay_key: bytes) -> str | None:
        seen.append(relay_key)
        return None

    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0, trust=trust)
    session.connect(0.0)
    (hello,) = session.datagrams_to_send(0.0)
    nonce = wire.decode_datagram(hello).nonce  # type: ignore[union-attr]
    session.receive_datagram(_challenge(nonce, b"c" * 20, bad_key, False), 0.01)
    assert session.state is SessionState.CONNECTING and seen == []
    relay_key = public_key(bytes(range(32)))
    session.receive_datagram(_challenge(nonce, b"c" * 20, relay_key, False), 0.02)
    assert session.state is SessionState.JOINING and seen == [relay_key]


def forge_rejects(net: SimNetwork, victim: Address) -> list[bytes]:
    """Answer every datagram ``victim`` sends the relay with REJECTs forged from the relay's
    address, ahead of the real answer: one without a nonce (the BAD_KEY relays used to
    send) and one with a made-up nonce, as an off-path attacker can."""
    forged: list[bytes] = []
    rng = random.Random(5)

    def tap(src: Address, dst: Address, data: bytes) -> None:
        if src == victim and dst == RELAY:
            for nonce in (b"", rng.randbytes(8)):
                fields = [2, wire.DatagramType.REJECT, nonce, wire.RejectCode.BAD_KEY, "forged"]
                forged.append(wire.pack(fields))
                net.inject(RELAY, victim, forged[-1])

    net.taps.append(tap)
    return forged


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
def test_e2e_forged_rejects_end_neither_a_join_nor_a_rejoin(keyed: bool) -> None:
    def key(seed: int) -> PskDeriver | None:
        return quick_room_key(b"open sesame") if keyed else None

    net, _relay = keyed_net(key(5))
    alice = keyed_member(net, 0, "alice", key(7))
    forged = forge_rejects(net, client_addr(0))
    join_all(net, [alice])
    assert len(forged) >= 4  # HELLO and JOIN were both answered by the forger first
    # The relay restarts with the same identity: alice rejoins at once after its RESET,
    # under fire again.
    net.detach(RELAY)
    restarted = RelayCore(
        RelayConfig(), net.now, seeded(9), TIME, room_key=key(6), static_key=RELAY_STATIC
    )
    net.attach(RELAY, restarted)
    before = len(forged)
    alice.session.say("after the restart", net.now)
    assert net.run_until(lambda: alice.session.stats.reconnects == 1, 10)
    assert alice.session.state is SessionState.JOINED
    assert len(forged) > before + 4
    assert alice.of(ev.JoinRejected) == [] and alice.of(ev.Closed) == []


def test_join_timeout_quotes_an_unverifiable_reject() -> None:
    """A relay that does not answer, and somebody else who does: the join runs to its
    deadline and then says what the unverifiable answer was."""
    net, relay, (alice,) = make_net()
    relay.answer_handshake = False
    forge_rejects(net, client_addr(0))
    alice.session.connect(net.now)
    assert net.run_until(lambda: alice.session.state is SessionState.CLOSED, 15)
    assert net.now == pytest.approx(10.0, abs=0.05)
    (closed,) = alice.of(ev.Closed)
    assert isinstance(closed, ev.Closed)
    assert closed.reason == (
        "the relay does not answer (check the address and port); an unverifiable reply said: forged"
    )
    assert alice.of(ev.JoinRejected) == []


def test_sealed_session_end_to_end() -> None:
    """A relay with a key: HELLO, CHALLENGE, JOIN and ACCEPT are the handshake; everything
    after it is sealed with the session's keys, padded to a bucket, both ways."""
    seen: list[tuple[Address, int, int]] = []
    net = SimNetwork(seed=1, default=PathModel(delay=0.01))
    net.taps.append(lambda src, dst, data: seen.append((src, data[2], len(data))))
    relay = FakeRelay()
    relay.room_key = quick_room_key(b"k")
    net.attach(RELAY, relay)
    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0, quick_room_key(b"k"))
    alice = ClientNode(session)
    net.attach(client_addr(0), alice)
    join_all(net, [alice])
    session.say("secret", net.now)
    assert net.run_until(lambda: session.idle, 2)
    assert without_ids(relay.only_session().received) == [msg.Say("secret")]
    handshake = {wire.DatagramType.HELLO, wire.DatagramType.JOIN}
    assert [k for a, k, _ in seen if a != RELAY and k in handshake] == [1, 3]
    for _, kind, size in seen:
        if kind in wire.SESSION_TYPES:
            assert size - 14 - 16 - (2 if size < 270 else 3) in (64, 256, 512, 1152)


# --- chat -------------------------------------------------------------------------------------


def test_say_is_pending_then_posted() -> None:
    net, relay, (alice, bob) = make_net(("alice", "bob"))
    join_all(net, [alice, bob])
    alice.drain()
    bob.drain()
    local_id = alice.session.say("hello", net.now)
    assert alice.session.pending == 1
    assert alice.drain() == [ev.MessagePending(local_id, "hello")]
    assert net.run_until(lambda: alice.session.idle, 2)
    (posted,) = alice.of(ev.MessageReceived)
    assert isinstance(posted, ev.MessageReceived)
    assert (posted.own, posted.local_id, posted.text, posted.nick) == (
        True,
        local_id,
        "hello",
        "alice",
    )
    assert posted.seq == relay.seq
    assert alice.session.pending == 0
    (seen,) = bob.of(ev.MessageReceived)
    assert seen == ev.MessageReceived(relay.seq, float(TIME), "alice", "hello")


def test_action_and_refusal_keep_their_local_ids() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    relay.refuse_next = 1
    first = alice.session.say("one", net.now)
    second = alice.session.action("waves", net.now)
    assert net.run_until(lambda: alice.session.idle, 2)
    refused = alice.of(ev.MessageRefused)
    assert refused == [ev.MessageRefused(first, "one", "slow down")]
    (posted,) = alice.of(ev.MessageReceived)
    assert isinstance(posted, ev.MessageReceived)
    assert posted.action and posted.own and posted.local_id == second


def test_bad_input_raises_value_error_with_one_line() -> None:
    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0)
    cases: list[Callable[[], object]] = [
        lambda: session.say("", 0.0),
        lambda: session.action("x" * (msg.MAX_TEXT_BYTES + 1), 0.0),
        lambda: session.change_nick("two words", 0.0),
        lambda: session.private("/bob", "hi", 0.0),
        lambda: session.quit("x" * 600, 0.0),
    ]
    for case in cases:
        with pytest.raises(ValueError) as info:
            case()
        assert "\n" not in str(info.value) and str(info.value)
    assert session.events() == []
    with pytest.raises(ValueError):
        ClientConfig("")


def test_messages_typed_before_joining_are_queued_in_order_and_bounded() -> None:
    net, relay, (alice,) = make_net(max_pending=3)
    ids = [alice.session.say("early", net.now)]
    alice.session.connect(net.now)
    ids.append(alice.session.action("stretches", net.now))
    alice.session.who(net.now)
    with pytest.raises(QueueFull):
        alice.session.say("too many", net.now)
    assert alice.session.pending == 2
    assert net.run_until(lambda: alice.session.idle, 3)
    received = without_ids(relay.only_session().received)
    assert received == [msg.Say("early"), msg.Action("stretches"), msg.Who()]
    posted = [e.local_id for e in alice.of(ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert posted == ids
    assert alice.of(ev.MembersListed) == [ev.MembersListed(("alice",))]


def test_members_follow_joins_leaves_and_nick_changes() -> None:
    net, _relay, (alice, bob, carol) = make_net(("alice", "bob", "carol"))
    join_all(net, [alice, bob, carol])
    assert alice.session.members == ("alice", "bob", "carol")
    bob.session.change_nick("robert", net.now)
    assert net.run_until(lambda: "robert" in alice.session.members, 2)
    assert bob.session.nick == "robert"
    own = [e for e in bob.of(ev.NickChanged) if isinstance(e, ev.NickChanged)]
    assert own and own[-1].own and own[-1].new == "robert"
    carol.session.quit("bye", net.now)
    assert carol.session.state is SessionState.LEAVING
    assert net.run_until(lambda: carol.session.state is SessionState.CLOSED, 2)
    assert carol.of(ev.Closed) == [ev.Closed("left the room")]
    assert net.run_until(lambda: alice.session.members == ("alice", "robert"), 2)
    left = [e for e in alice.of(ev.MemberLeft) if isinstance(e, ev.MemberLeft)]
    assert left and (left[-1].nick, left[-1].reason, left[-1].text) == ("carol", "quit", "bye")


def test_private_messages_and_errors() -> None:
    net, relay, (alice, bob) = make_net(("alice", "bob"))
    join_all(net, [alice, bob])
    alice.session.private("bob", "psst", net.now)
    assert net.run_until(lambda: bool(bob.of(ev.PrivateReceived)), 2)
    assert bob.of(ev.PrivateReceived) == [ev.PrivateReceived(float(TIME), "alice", "bob", "psst")]
    relay.send(relay.sessions[next(iter(relay.sessions))], msg.Error("no such nickname"))
    assert net.run_until(lambda: bool(alice.of(ev.ErrorReported)), 2)


def test_quit_closes_after_the_timeout_when_the_relay_is_gone() -> None:
    net, _relay, (alice,) = make_net()
    join_all(net, [alice])
    net.detach(RELAY)
    start = net.now
    alice.session.quit("bye", net.now)
    assert net.run_until(lambda: alice.session.state is SessionState.CLOSED, 5)
    assert net.now - start == pytest.approx(2.0, abs=0.01)
    assert alice.of(ev.Closed) == [ev.Closed("left the room (the relay did not confirm)")]


def test_history_is_flagged_and_gaps_are_reported() -> None:
    net, relay, (alice,) = make_net()
    for text in ("old 0", "old 1", "old 2"):
        relay.history.append(msg.ChatMessage(relay.seq + 1, TIME, "bob", text))
        relay.seq += 1
    join_all(net, [alice])
    net.run(0.5)
    history = [e for e in alice.of(ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert [(e.text, e.history) for e in history] == [(f"old {i}", True) for i in range(3)]
    alice.drain()
    # A live event that skips sequence numbers: the member missed some.
    relay.seq += 2
    event = relay.room_event(lambda seq: msg.ChatMessage(seq, TIME, "bob", "later"))
    relay.send(relay.only_session(), event)
    assert net.run_until(lambda: bool(alice.of(ev.MessageReceived)), 2)
    gap = alice.of(ev.HistoryGap)
    assert gap == [ev.HistoryGap(event.seq - 2, event.seq - 1)]


def test_path_challenge_is_answered_with_the_same_bytes() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    session = relay.only_session()
    net.inject(RELAY, client_addr(0), session.link.encode_path(wire.PathChallenge, b"8 bytes!"))
    net.run(0.1)
    responses = client_datagrams(relay, wire.PathResponse)
    assert [d.data for _, d in responses if isinstance(d, wire.PathResponse)] == [b"8 bytes!"]


# --- liveness and rejoining -------------------------------------------------------------------


def test_heartbeat_pings_when_quiet_and_probes_when_the_relay_is() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    net.run(0.5)
    start = len(client_datagrams(relay, wire.Ping))
    net.run(4)
    pings = [t for t, _ in client_datagrams(relay, wire.Ping)][start:]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert gaps and all(g == pytest.approx(1.0, abs=0.03) for g in gaps)
    # The relay goes silent: after one heartbeat of silence, a probe every quarter of one.
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    silent_from = net.now
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    probes = [t for t, _ in client_datagrams(relay, wire.Ping) if t > silent_from + 1.1]
    probe_gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert probe_gaps and all(g == pytest.approx(0.25, abs=0.03) for g in probe_gaps)
    assert alice.of(ev.ConnectionLost) == [ev.ConnectionLost("the relay went silent")]
    assert net.now - silent_from == pytest.approx(5.0, abs=1.1)


def test_silence_leads_to_rejoin_with_doubling_backoff_and_resume() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    old = relay.only_session()
    net.detach(RELAY)
    assert net.run_until(lambda: len(alice.of(ev.Reconnecting)) >= 4, 60)
    reconnecting = [e for e in alice.of(ev.Reconnecting) if isinstance(e, ev.Reconnecting)]
    assert [(e.attempt, e.delay) for e in reconnecting] == [
        (1, 0.5),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
    ]
    assert alice.session.state is SessionState.RECONNECTING
    net.attach(RELAY, relay)
    assert net.run_until(lambda: alice.session.state is SessionState.JOINED, 20)
    resume = relay.joins[-1].resume
    # Our own JOINED (seq 1) never reached us, so the last event we processed is WELCOME's.
    assert resume is not None and (resume.epoch, resume.token, resume.last_seq) == (
        EPOCH,
        old.token,
        0,
    )
    assert len(resume.proof) == wire.RESUME_PROOF_SIZE
    assert alice.of(ev.Welcomed)[-1] == ev.Welcomed("alice", ("alice",), resumed=True)
    assert alice.session.stats.reconnects == 1


def test_reconnect_delay_is_capped() -> None:
    net, _relay, (alice,) = make_net(max_reconnect_delay=3.0, join_timeout=1.0)
    join_all(net, [alice])
    net.detach(RELAY)
    assert net.run_until(lambda: len(alice.of(ev.Reconnecting)) >= 5, 60)
    delays = [e.delay for e in alice.of(ev.Reconnecting) if isinstance(e, ev.Reconnecting)]
    assert delays[:5] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_no_reconnect_means_closed() -> None:
    net, _relay, (alice,) = make_net(reconnect=False)
    join_all(net, [alice])
    net.detach(RELAY)
    assert net.run_until(lambda: alice.session.state is SessionState.CLOSED, 10)
    kinds = [type(e) for e in alice.drain()]
    assert kinds[-2:] == [ev.ConnectionLost, ev.Closed]


def test_reset_after_a_relay_restart_rejoins_at_once_and_resends() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    net.set_path(client_addr(0), RELAY, PathModel(loss=1.0))
    local_id = alice.session.say("lost in the crash", net.now)
    net.run(0.2)
    relay.restart(b"epoch-02")
    net.set_path(client_addr(0), RELAY, PathModel(delay=0.01))
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 3)
    assert alice.of(ev.Reconnecting) == [ev.Reconnecting(1, 0.0)]
    assert net.run_until(lambda: alice.session.idle, 3)
    assert alice.of(ev.Welcomed)[-1] == ev.Welcomed("alice", ("alice",), resumed=False)
    # The WHO marks the end of catch-up history; resends wait for it.
    assert without_ids(relay.only_session().received) == [msg.Who(), msg.Say("lost in the crash")]
    posted = [e for e in alice.of(ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert [(e.local_id, e.seq) for e in posted] == [(local_id, 2)]  # 1 is our JOINED


def test_shutdown_is_a_lost_relay_with_its_reason() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    relay.send(relay.only_session(), msg.Shutdown("maintenance"))
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 2)
    assert alice.of(ev.ConnectionLost) == [
        ev.ConnectionLost("the relay is shutting down: maintenance")
    ]
    assert alice.session.state is SessionState.RECONNECTING


def test_resume_resends_exactly_what_the_relay_did_not_receive() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    up, down = (client_addr(0), RELAY), (RELAY, client_addr(0))
    first = alice.session.say("one", net.now)
    assert net.run_until(lambda: alice.session.idle, 2)
    # The relay still hears us but we no longer hear it: "two" is posted, its POSTED lost.
    net.set_path(*down, PathModel(loss=1.0))
    second = alice.session.say("two", net.now)
    net.run(0.3)
    # Now nothing gets through: "three" and the WHO never reach the relay.
    net.set_path(*up, PathModel(loss=1.0))
    third = alice.session.say("three", net.now)
    alice.session.who(net.now)
    old = relay.only_session()
    assert without_ids(old.received) == [msg.Say("one"), msg.Say("two")]
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    net.set_default(PathModel(delay=0.01))
    assert net.run_until(lambda: alice.session.idle, 20)
    new = relay.only_session()
    assert new.token != old.token
    assert without_ids(new.received[-2:]) == [msg.Say("three"), msg.Who()]
    assert msg.Say("two") not in new.received
    assert alice.session.pending == 0
    received = [e for e in alice.of(ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert [(e.local_id, e.text, e.history) for e in received] == [
        (first, "one", False),
        (second, "two", True),  # confirmed by the catch-up history
        (third, "three", False),
    ]
    assert [e.seq for e in received] == sorted(e.seq for e in received)
    assert alice.of(ev.MessageRefused) == []
    assert len(alice.of(ev.MembersListed)) == 1  # the user's WHO only


def test_limbo_messages_missing_from_history_are_reported_unconfirmed() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    down = (RELAY, client_addr(0))
    net.set_path(*down, PathModel(loss=1.0))
    relay.refuse_next = 1
    refused = alice.session.say("refused, but the answer is lost", net.now)
    posted = alice.session.say("posted, answer lost", net.now)
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    net.set_default(PathModel(delay=0.01))
    assert net.run_until(lambda: alice.session.idle, 20)
    assert alice.of(ev.MessageRefused) == [
        ev.MessageRefused(
            refused,
            "refused, but the answer is lost",
            "the relay did not confirm this message before the connection was lost",
        )
    ]
    confirmed = [e for e in alice.of(ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert [e.local_id for e in confirmed] == [posted]


def test_catch_up_after_an_outage_with_a_gap() -> None:
    net, relay, (alice, bob) = make_net(("alice", "bob"))
    join_all(net, [alice, bob])
    alice.drain()
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    net.set_path(client_addr(0), RELAY, PathModel(loss=1.0))
    for i in range(4):
        bob.session.say(f"while away {i}", net.now)
    assert net.run_until(lambda: bob.session.idle, 3)
    relay.history = relay.history[-2:]  # the relay forgot the oldest two
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    net.set_default(PathModel(delay=0.01))
    assert net.run_until(lambda: alice.session.state is SessionState.JOINED, 20)
    net.run(0.5)
    texts = [
        (e.text, e.history)
        for e in alice.of(ev.MessageReceived)
        if isinstance(e, ev.MessageReceived)
    ]
    assert texts == [("while away 2", True), ("while away 3", True)]
    gaps = alice.of(ev.HistoryGap)
    assert len(gaps) == 1 and isinstance(gaps[0], ev.HistoryGap)
    assert gaps[0].last_missing - gaps[0].first_missing == 1
    assert alice.session.members == ("alice", "bob")


def test_taken_nick_on_a_rejoin_after_restart_gets_a_suffix() -> None:
    net, relay, (alice, impostor) = make_net(("alice", "mallory"))
    join_all(net, [alice])
    net.detach(RELAY)
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    relay.restart(b"epoch-02")
    net.attach(RELAY, relay)
    # Someone else takes the name on the new relay first.
    relay.answer_handshake = True
    impostor_session = ClientSession(ClientConfig("ALICE"), seeded(5), net.now)
    impostor.session = impostor_session
    join_all(net, [impostor])
    assert net.run_until(lambda: alice.session.state is SessionState.JOINED, 30)
    assert alice.session.nick == "alice_"
    errors = [e for e in alice.of(ev.ErrorReported) if isinstance(e, ev.ErrorReported)]
    assert errors == [ev.ErrorReported("the nickname alice is taken; trying alice_")]


def test_suffix_stays_within_the_nickname_limit() -> None:
    nick = "n" * 32
    session = ClientSession(ClientConfig(nick), seeded(1), 0.0)
    session.nick = nick
    assert session._suffixed_nick() == "n" * 31 + "_"
    assert session._suffixed_nick() == "n" * 30 + "__"


# --- robustness -------------------------------------------------------------------------------


def test_datagrams_for_other_sessions_are_counted_and_dropped() -> None:
    net, _relay, (alice,) = make_net()
    join_all(net, [alice])
    alice.drain()
    other = Link(b"N" * 8, keys=random_keys(3))
    other.ping()
    for data in other.datagrams_to_send(net.now):
        alice.session.receive_datagram(data, net.now)
    alice.session.receive_datagram(wire.encode_reset(b"N" * 8, bytes(16)), net.now)
    alice.session.receive_datagram(b"\x00garbage", net.now)
    alice.session.receive_datagram(wire.encode_hello(b"h" * 8), net.now)
    stats = alice.session.stats
    assert (stats.wrong_session, stats.malformed, stats.unexpected) == (2, 1, 1)
    assert alice.session.state is SessionState.JOINED
    assert alice.drain() == []


def _session_in(state: str) -> ClientSession:
    net, relay, (alice,) = make_net()
    if state == "idle":
        return alice.session
    if state == "connecting":
        relay.answer_handshake = False
        alice.session.connect(net.now)
        return alice.session
    join_all(net, [alice])
    if state == "reconnecting":
        net.detach(RELAY)
        net.run_until(lambda: alice.session.state is SessionState.RECONNECTING, 10)
    return alice.session


@settings(max_examples=150, deadline=None)
@given(
    state=st.sampled_from(["idle", "connecting", "joined", "reconnecting"]),
    garbage=st.lists(st.binary(max_size=1300), max_size=8),
)
def test_arbitrary_bytes_never_raise(state: str, garbage: list[bytes]) -> None:
    session = _session_in(state)
    before = session.state
    for data in garbage:
        session.receive_datagram(data, 100.0)
    assert session.state is before
    stats = session.stats
    dropped = stats.malformed + stats.wrong_session + stats.unexpected + stats.replays
    assert dropped >= sum(1 for d in garbage if d) - stats.bad_messages


@settings(max_examples=100, deadline=None)
@given(
    fields=st.lists(
        st.one_of(
            st.integers(-(2**63), 2**64 - 1),
            st.binary(max_size=20),
            st.text(max_size=10),
            st.booleans(),
            st.none(),
        ),
        max_size=8,
    ),
    kind=st.integers(0, 20),
)
def test_wellformed_msgpack_of_any_shape_never_raises(fields: list[object], kind: int) -> None:
    session = _session_in("joined")
    session.receive_datagram(wire.pack([1, kind, *fields]), 100.0)
    assert session.state is SessionState.JOINED


def test_state_table_is_complete_and_closed_is_final() -> None:
    assert set(TRANSITIONS) == set(SessionState)
    assert TRANSITIONS[SessionState.CLOSED] == frozenset()
    for targets in TRANSITIONS.values():
        assert SessionState.IDLE not in targets


def test_misuse_raises_local_protocol_error() -> None:
    net, _relay, (alice,) = make_net()
    join_all(net, [alice])
    with pytest.raises(LocalProtocolError):
        alice.session.connect(net.now)
    alice.session.quit("bye", net.now)
    with pytest.raises(LocalProtocolError):
        alice.session.quit("again", net.now)
    with pytest.raises(LocalProtocolError):
        alice.session.say("too late", net.now)
    assert net.run_until(lambda: alice.session.state is SessionState.CLOSED, 3)
    calls: list[Callable[[], object]] = [
        lambda: alice.session.connect(net.now),
        lambda: alice.session.who(net.now),
        lambda: alice.session.change_nick("bob", net.now),
        lambda: alice.session.private("bob", "x", net.now),
        lambda: alice.session.quit("", net.now),
    ]
    for call in calls:
        with pytest.raises(LocalProtocolError):
            call()
    assert alice.session.datagrams_to_send(net.now) == []
    assert alice.session.next_timer() is None


def test_quit_before_joining_closes_at_once() -> None:
    session = ClientSession(ClientConfig("alice"), seeded(1), 0.0)
    session.connect(0.0)
    local_id = session.say("never sent", 0.0)
    session.quit("changed my mind", 0.0)
    assert session.state is SessionState.CLOSED
    assert session.events()[-2:] == [
        ev.MessageRefused(
            local_id, "never sent", "the session closed before the relay confirmed this message"
        ),
        ev.Closed("left the room"),
    ]
    assert session.pending == 0


# --- end to end with the relay core -----------------------------------------------------------


def relay_net(
    nicks: tuple[str, ...],
    model: PathModel | None = None,
    seed: int = 1,
    relay_config: RelayConfig | None = None,
    **config: object,
) -> tuple[SimNetwork, RelayCore, list[ClientNode]]:
    net = SimNetwork(seed=seed, default=model or PathModel(delay=0.005))
    relay = RelayCore(
        relay_config or RelayConfig(),
        net.now,
        seeded(seed),
        wall_offset=TIME,
        static_key=RELAY_STATIC,
    )
    net.attach(RELAY, relay)
    nodes = []
    for i, nick in enumerate(nicks):
        client_config = ClientConfig(nick, **config)  # type: ignore[arg-type]
        session = ClientSession(client_config, seeded(seed * 100 + i), net.now, wall_offset=TIME)
        node = ClientNode(session)
        net.attach(client_addr(i), node)
        nodes.append(node)
    return net, relay, nodes


def keyed_net(room_key: PskDeriver | None, seed: int = 4) -> tuple[SimNetwork, RelayCore]:
    """A relay core with ``room_key`` (or none) on a simulated network."""
    net = SimNetwork(seed=seed, default=PathModel(delay=0.005))
    relay = RelayCore(
        RelayConfig(), net.now, seeded(seed), TIME, room_key=room_key, static_key=RELAY_STATIC
    )
    net.attach(RELAY, relay)
    return net, relay


def keyed_member(net: SimNetwork, i: int, nick: str, room_key: PskDeriver | None) -> ClientNode:
    session = ClientSession(ClientConfig(nick), seeded(10 + i), net.now, room_key, TIME)
    node = ClientNode(session)
    net.attach(client_addr(i), node)
    return node


def chat_log(node: ClientNode) -> list[tuple[int, str, str]]:
    """What a member saw of the room, live, in the order it was shown."""
    return [
        (e.seq, e.nick, e.text)
        for e in node.of(ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and not e.history
    ]


def test_e2e_join_and_members() -> None:
    net, relay, nodes = relay_net(("alice", "bob", "carol"))
    join_all(net, nodes)
    net.run(0.5)
    for node in nodes:
        assert node.session.members == ("alice", "bob", "carol")
    assert relay.member_nicks() == ["alice", "bob", "carol"]
    joined = [e.nick for e in nodes[0].of(ev.MemberJoined) if isinstance(e, ev.MemberJoined)]
    assert joined == ["bob", "carol"]
    assert all(not node.of(ev.HistoryGap) for node in nodes)


def test_e2e_three_members_chat_at_20_percent_loss() -> None:
    lossy = PathModel(loss=0.2, delay=0.01, jitter=0.005, reorder=0.05)
    net, _relay, nodes = relay_net(("alice", "bob", "carol"), lossy, seed=3)
    join_all(net, nodes, timeout=30)
    for round_ in range(8):
        for node in nodes:
            node.session.say(f"{node.session.nick} {round_}", net.now)
        net.run(0.05)
    assert net.run_until(lambda: all(n.session.idle for n in nodes), 120)
    net.run(2)  # the last fan-out settles
    logs = [chat_log(node) for node in nodes]
    assert len(logs[0]) == 24
    assert logs[0] == logs[1] == logs[2]  # one order for everyone
    assert [seq for seq, _, _ in logs[0]] == sorted(seq for seq, _, _ in logs[0])
    for node in nodes:
        own = [
            e for e in node.of(ev.MessageReceived) if isinstance(e, ev.MessageReceived) and e.own
        ]
        assert [e.local_id for e in own] == list(range(1, 9))
        assert not node.of(ev.MessageRefused)
        assert not node.of(ev.HistoryGap)
    assert sum(n.session.stats.retransmissions for n in nodes) > 0
    assert net.stats.dropped > 0


def test_e2e_relay_restart_resets_sessions_and_members_rejoin() -> None:
    net, _relay, (alice, bob) = relay_net(("alice", "bob"))
    join_all(net, [alice, bob])
    alice.session.say("before", net.now)
    assert net.run_until(lambda: alice.session.idle, 2)
    net.detach(RELAY)
    restarted = RelayCore(
        RelayConfig(), net.now, seeded(77), wall_offset=TIME, static_key=RELAY_STATIC
    )
    net.attach(RELAY, restarted)
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 3)
    assert alice.of(ev.ConnectionLost) == [ev.ConnectionLost("the relay lost our session")]
    assert alice.of(ev.Reconnecting) == [ev.Reconnecting(1, 0.0)]
    assert net.run_until(
        lambda: all(n.session.state is SessionState.JOINED for n in (alice, bob)), 5
    )
    welcomed = alice.of(ev.Welcomed)[-1]
    assert isinstance(welcomed, ev.Welcomed) and not welcomed.resumed
    bob.session.say("after", net.now)
    assert net.run_until(lambda: bool(chat_log(alice)[1:]), 3)
    assert chat_log(alice)[-1][1:] == ("bob", "after")
    assert restarted.member_nicks() == ["alice", "bob"]
    assert alice.session.members == bob.session.members == ("alice", "bob")


def test_e2e_relay_forgets_an_unreachable_member_who_comes_back() -> None:
    """The relay times a member out while only the way back works; the member's next
    datagram draws a RESET and it rejoins at once, catching up on what it missed."""
    relay_config = RelayConfig(timeout=3.0)
    net, relay, (alice, bob) = relay_net(("alice", "bob"), relay_config=relay_config)
    join_all(net, [alice, bob])
    up = (client_addr(0), RELAY)
    net.set_path(*up, PathModel(loss=1.0))
    assert net.run_until(lambda: relay.member_nicks() == ["bob"], 10)
    bob.session.say("did alice leave?", net.now)
    net.set_path(*up, PathModel(delay=0.005))
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    assert alice.of(ev.ConnectionLost)[0] == ev.ConnectionLost("the relay lost our session")
    assert net.run_until(lambda: alice.session.idle and relay.member_nicks() == ["alice", "bob"], 5)
    assert alice.of(ev.Welcomed)[-1] == ev.Welcomed("alice", ("alice", "bob"), resumed=False)
    texts = [e.text for e in alice.of(ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert "did alice leave?" in texts
    left = [e for e in bob.of(ev.MemberLeft) if isinstance(e, ev.MemberLeft)]
    assert [(e.nick, e.reason) for e in left] == [("alice", "timed out")]


def test_e2e_catch_up_after_an_outage_keeps_the_place_and_the_messages() -> None:
    net, _relay, (alice, bob, carol) = relay_net(("alice", "bob", "carol"))
    join_all(net, [alice, bob, carol])
    net.run(0.5)
    alice.drain()
    cut = PathModel(loss=1.0)
    net.set_path(client_addr(0), RELAY, cut)
    net.set_path(RELAY, client_addr(0), cut)
    for i in range(5):
        bob.session.say(f"missed {i}", net.now)
        net.run(0.2)
    typed = [alice.session.say(f"typed in the dark {i}", net.now) for i in range(2)]
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    net.run(1.0)
    net.set_path(client_addr(0), RELAY, PathModel(delay=0.005))
    net.set_path(RELAY, client_addr(0), PathModel(delay=0.005))
    assert net.run_until(lambda: alice.session.idle, 20)
    net.run(0.5)
    assert alice.of(ev.Welcomed)[-1] == ev.Welcomed("alice", ("alice", "bob", "carol"), True)
    history = [
        e.text
        for e in alice.of(ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and e.history
    ]
    assert history == [f"missed {i}" for i in range(5)]
    assert not alice.of(ev.HistoryGap)
    own = [
        e.local_id
        for e in alice.of(ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and e.own
    ]
    assert own == typed
    for other in (bob, carol):
        texts = [t for _, _, t in chat_log(other)]
        assert texts[-2:] == ["typed in the dark 0", "typed in the dark 1"]
        assert not other.of(ev.MemberLeft)  # a resume is not a leave
    assert alice.session.stats.reconnects == 1


def test_e2e_resume_does_not_repeat_what_the_relay_received() -> None:
    net, _relay, (alice, bob) = relay_net(("alice", "bob"))
    join_all(net, [alice, bob])
    down = (RELAY, client_addr(0))
    net.set_path(*down, PathModel(loss=1.0))
    ids = [alice.session.say(f"answer lost {i}", net.now) for i in range(3)]
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    net.set_path(*down, PathModel(delay=0.005))
    assert net.run_until(lambda: alice.session.idle, 20)
    net.run(0.5)
    texts = [t for _, _, t in chat_log(bob)]
    assert texts == [f"answer lost {i}" for i in range(3)]  # each exactly once
    confirmed = [
        e.local_id
        for e in alice.of(ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and e.own
    ]
    assert confirmed == ids
    assert alice.session.pending == 0


def test_e2e_shutdown_is_acknowledged_then_the_member_rejoins() -> None:
    net, relay, (alice,) = relay_net(("alice",))
    join_all(net, [alice])
    relay.shutdown("maintenance", net.now)
    assert net.run_until(lambda: relay.closed, 0.5)
    assert alice.of(ev.ConnectionLost) == [
        ev.ConnectionLost("the relay is shutting down: maintenance")
    ]
    net.detach(RELAY)
    net.attach(RELAY, RelayCore(RelayConfig(), net.now, seeded(8), wall_offset=TIME))
    assert net.run_until(lambda: alice.session.state is SessionState.JOINED, 5)


def test_e2e_room_key() -> None:
    net, relay = keyed_net(quick_room_key(b"open sesame"))
    alice = keyed_member(net, 0, "alice", quick_room_key(b"open sesame"))
    sizes: list[int] = []
    net.taps.append(lambda src, dst, data: sizes.append(len(data)))
    join_all(net, [alice])
    alice.session.say("sealed", net.now)
    alice.session.say("é" * 8000, net.now)  # 16,000 bytes: many full-size sealed datagrams
    assert net.run_until(lambda: alice.session.idle, 5)
    assert max(sizes) == wire.MAX_DATAGRAM_SIZE  # HELLO and JOIN; full DATA fit too
    assert relay.member_nicks() == ["alice"]
    assert relay.stats.bad_key == 0


def handshake_traffic(net: SimNetwork, client: Address) -> list[tuple[bool, int]]:
    """(sealed, type) of every datagram ``client`` sends, as an observer sees it."""
    seen: list[tuple[bool, int]] = []

    def tap(src: Address, dst: Address, data: bytes) -> None:
        if src == client:
            seen.append((data[2] in wire.SESSION_TYPES, data[2]))

    net.taps.append(tap)
    return seen


def test_e2e_wrong_key_is_told_promptly() -> None:
    """One round trip to learn the relay's key, one for the JOIN whose handshake the relay
    cannot authenticate: the answer is final, since the cookie showed the same relay."""
    net, relay = keyed_net(quick_room_key(b"open sesame"))
    mallory = keyed_member(net, 1, "mallory", quick_room_key(b"open says me"))
    mallory.session.connect(net.now)
    assert net.run_until(lambda: mallory.session.state is SessionState.CLOSED, 10)
    assert net.now < 0.1
    assert mallory.drain() == [
        ev.JoinRejected(wire.RejectCode.BAD_KEY, "wrong room key"),
        ev.Closed("wrong room key"),
    ]
    assert relay.member_nicks() == [] and relay.stats.bad_key == 1


def test_e2e_no_key_against_a_relay_with_one_is_told_promptly() -> None:
    net, relay = keyed_net(quick_room_key(b"open sesame"))
    eve = keyed_member(net, 2, "eve", None)
    sent = handshake_traffic(net, client_addr(2))
    eve.session.connect(net.now)
    assert net.run_until(lambda: eve.session.state is SessionState.CLOSED, 10)
    assert net.now < 0.05  # one round trip
    assert eve.drain() == [ev.Closed("this room needs a key: give it with --key or UDPCHAT_KEY")]
    assert sent == [(False, wire.DatagramType.HELLO)]  # no JOIN: nothing to refuse
    assert relay.stats.bad_key == 0


def test_e2e_a_key_against_a_relay_without_one_is_told_promptly() -> None:
    derived: list[bytes] = []
    real = quick_room_key(b"open sesame")

    def room_key(relay_key: bytes) -> bytes:
        derived.append(relay_key)
        return real(relay_key)

    net, relay = keyed_net(None)
    alice = keyed_member(net, 0, "alice", room_key)
    sent = handshake_traffic(net, client_addr(0))
    alice.session.connect(net.now)
    assert net.run_until(lambda: alice.session.state is SessionState.CLOSED, 10)
    assert net.now < 0.05
    assert alice.drain() == [ev.Closed("this relay has no room key; join without --key")]
    assert sent == [(False, wire.DatagramType.HELLO)]  # it never joined in the clear
    assert derived == [] and relay.member_nicks() == []


def test_e2e_each_relay_identity_has_its_own_psk() -> None:
    """With the real scrypt: two relays with one passphrase have two static keys, so they
    derive two psks; a member derives the psk for each relay key once, and takes it from its
    cache when the first relay is back."""
    passphrase = "correct horse battery staple"
    first = RelayCore(RelayConfig(), 0.0, seeded(1), TIME, room_key(passphrase))
    second = RelayCore(RelayConfig(), 0.0, seeded(3), TIME, room_key(passphrase))
    assert first.relay_key != second.relay_key
    derived: list[bytes] = []
    real = room_key(passphrase)

    def counting(relay_key: bytes) -> bytes:
        derived.append(relay_key)
        return real(relay_key)

    net = SimNetwork(seed=4, default=PathModel(delay=0.005))
    net.attach(RELAY, first)
    alice = keyed_member(net, 0, "alice", counting)
    join_all(net, [alice])
    assert derived == [first.relay_key]
    for relay, reconnects in ((second, 1), (first, 2)):
        net.detach(RELAY)
        net.attach(RELAY, relay)
        alice.session.say(f"to the relay with key {relay.relay_key.hex()}", net.now)
        assert net.run_until(lambda n=reconnects: alice.session.stats.reconnects == n, 20)
        assert net.run_until(lambda: alice.session.state is SessionState.JOINED, 5)
    # The second relay could not open what alice sealed for the first: other session keys.
    assert second.stats.unknown_session > 0
    assert derived == [first.relay_key, second.relay_key]


def test_e2e_a_relay_restart_between_challenge_and_join_is_not_a_wrong_key() -> None:
    """The JOIN was encrypted to a relay identity that is gone; its successor (a new key)
    answers it with a fresh CHALLENGE carrying its own key, which the client checks and
    takes (once per HELLO): it joins the new relay."""
    net, _first = keyed_net(quick_room_key(b"open sesame"))
    second = RelayCore(RelayConfig(), 0.0, seeded(8), TIME, quick_room_key(b"open sesame"))
    alice = keyed_member(net, 0, "alice", quick_room_key(b"open sesame"))

    def restart_after_challenge(src: Address, dst: Address, data: bytes) -> None:
        if src == RELAY and data[2] == wire.DatagramType.CHALLENGE and second.stats.handshakes == 0:
            net.detach(RELAY)
            net.attach(RELAY, second)

    net.taps.append(restart_after_challenge)
    join_all(net, [alice])
    assert second.member_nicks() == ["alice"] and second.stats.bad_key == 0
    assert alice.of(ev.JoinRejected) == []


@pytest.mark.parametrize(
    ("new_key", "reason"),
    [
        (quick_room_key(b"open says me"), "wrong room key"),
        (None, "this relay has no room key; join without --key"),
    ],
    ids=["another-key", "no-key"],
)
def test_e2e_a_relay_restarted_with_another_key_ends_the_rejoin(
    new_key: PskDeriver | None, reason: str
) -> None:
    net, _first = keyed_net(quick_room_key(b"open sesame"))
    alice = keyed_member(net, 0, "alice", quick_room_key(b"open sesame"))
    join_all(net, [alice])
    net.detach(RELAY)
    restarted = RelayCore(
        RelayConfig(), net.now, seeded(8), TIME, room_key=new_key, static_key=RELAY_STATIC
    )
    net.attach(RELAY, restarted)
    assert net.run_until(lambda: alice.session.state is SessionState.CLOSED, 20)
    (closed,) = alice.of(ev.Closed)
    assert closed == ev.Closed(reason)


def test_e2e_sealed_chat_lines_show_only_their_bucket() -> None:
    """An observer of a room with a key sees the same datagrams, size for size, whether a
    member says "hi" or a 100-character line: from the sender, in the relay's answer and in
    its fan-out (protocol.md 8). Unpadded, they were 61 and 160 bytes."""
    net, _relay = keyed_net(quick_room_key(b"open sesame"))
    alice = keyed_member(net, 0, "alice", quick_room_key(b"open sesame"))
    bob = keyed_member(net, 1, "bob", quick_room_key(b"open sesame"))
    join_all(net, [alice, bob])
    assert net.run_until(lambda: alice.session.idle and bob.session.idle, 5)

    def observed(text: str) -> list[tuple[Address, Address, int]]:
        """(source, destination, padded plaintext size) of every DATA on the wire."""
        seen: list[tuple[Address, Address, int]] = []

        def tap(src: Address, dst: Address, data: bytes) -> None:
            datagram = wire.decode_datagram(data)
            if isinstance(datagram, wire.Protected) and datagram.kind == wire.DatagramType.DATA:
                seen.append((src, dst, len(datagram.sealed) - 16))

        net.taps.append(tap)
        heard = len(bob.of(ev.MessageReceived))
        alice.session.say(text, net.now)
        assert net.run_until(lambda: len(bob.of(ev.MessageReceived)) > heard, 2)
        assert net.run_until(lambda: alice.session.idle and bob.session.idle, 2)
        net.run(0.05)
        net.taps.pop()
        return seen

    short = observed("hi")
    long = observed("x" * 100)
    assert (
        short
        == long
        == [
            (client_addr(0), RELAY, 256),  # the SAY
            (RELAY, client_addr(0), 256),  # POSTED
            (RELAY, client_addr(1), 256),  # the fan-out
        ]
    )


@pytest.mark.parametrize("history", [200, 0])
def test_e2e_messages_of_an_evicted_session_are_not_posted_twice(history: int) -> None:
    """The relay received our messages, lost the answers with the link, then timed the
    session out: WELCOME says nothing arrived. With history, catch-up shows what was posted;
    without, the client resends all three and their message ids make the relay answer them
    without posting them again (protocol.md 4.2)."""
    config = RelayConfig(timeout=3.0, history=history)
    net, relay, (alice, bob) = relay_net(("alice", "bob"), relay_config=config)
    join_all(net, [alice, bob])
    up, down = (client_addr(0), RELAY), (RELAY, client_addr(0))
    net.set_path(*down, PathModel(loss=1.0))
    ids = [alice.session.say(f"posted blind {i}", net.now) for i in range(3)]
    net.run(0.3)
    net.set_path(*up, PathModel(loss=1.0))
    assert net.run_until(lambda: relay.member_nicks() == ["bob"], 10)
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    net.set_default(PathModel(delay=0.005))
    assert net.run_until(lambda: alice.session.idle, 20)
    net.run(0.5)
    assert [t for _, _, t in chat_log(bob)] == [f"posted blind {i}" for i in range(3)]
    if not history:
        assert relay.stats.resent_requests == 3
    confirmed = [
        e.local_id
        for e in alice.of(ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and e.own
    ]
    assert confirmed == ids
    assert alice.session.nick == "alice"


def test_e2e_a_rejoin_whose_accept_was_lost_keeps_the_nickname() -> None:
    """An attempt whose ACCEPTs were all lost left a session holding our nickname on the
    relay; the next attempt reuses the nonce and is given that session instead of a REJECT."""
    patient = RelayConfig(timeout=60.0, link=LinkConfig(max_retransmissions=200))
    net, relay, (alice,) = relay_net(("alice",), relay_config=patient)
    join_all(net, [alice])
    net.detach(RELAY)
    assert net.run_until(lambda: bool(alice.of(ev.ConnectionLost)), 10)
    net.attach(RELAY, relay)
    lost_accepts: list[bytes] = []
    original = net.send

    def drop_accepts(src: Address, dst: Address, data: bytes) -> None:
        if src == RELAY and data[2] == wire.DatagramType.ACCEPT and net.now < 20:
            lost_accepts.append(data)
            return
        original(src, dst, data)

    net.send = drop_accepts  # type: ignore[method-assign]
    assert net.run_until(lambda: alice.session.state is SessionState.JOINED, 40)
    assert lost_accepts
    assert alice.session.nick == "alice"
    assert not alice.of(ev.ErrorReported)
    assert relay.member_nicks() == ["alice"]


def test_a_paste_is_paced_under_the_relays_flood_limits_and_nothing_is_refused() -> None:
    net, relay, (alice, bob) = relay_net(("alice", "bob"))  # the relay's default limits
    join_all(net, [alice, bob])
    start = net.now
    for i in range(30):
        alice.session.say(f"line {i}", net.now)
    assert net.run_until(lambda: alice.session.pending == 0, 20)
    assert alice.of(ev.MessageRefused) == []
    texts = [e.text for e in bob.of(ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert texts == [f"line {i}" for i in range(30)]
    config = alice.session.config
    # 8 at once, then 4.5 a second: the last of 30 cannot be posted before ~4.9 s
    assert net.now - start >= (30 - config.pace_burst) / config.pace_rate - 0.1
    assert relay.stats.flood_refused == 0


class ErrorRelay(FakeRelay):
    """Answers a private message to nobody with ERROR, as a real relay does."""

    def _on_message(self, session: FakeSession, message: msg.Message) -> None:
        if isinstance(message, msg.PrivateSend) and all(
            s.nick != message.to for s in self.sessions.values()
        ):
            session.received.append(message)
            self.send(session, msg.Error(f"no such nickname: {message.to}"))
            return
        super()._on_message(session, message)


def test_an_error_names_the_request_it_answers() -> None:
    net, _, (alice, bob) = make_net(("alice", "bob"), relay=ErrorRelay())
    join_all(net, [alice, bob])
    alice.drain()
    ids = [
        alice.session.who(net.now),
        alice.session.private("bob", "psst", net.now),
        alice.session.private("nobody", "hello?", net.now),
        alice.session.change_nick("alicia", net.now),
        alice.session.private("ghost", "boo", net.now),
    ]
    said = alice.session.say("and a message", net.now)
    assert len(set([*ids, said])) == 6  # one id space for every request
    assert net.run_until(lambda: alice.session.idle and alice.session.nick == "alicia", 2)
    errors = alice.of(ev.ErrorReported)
    assert errors == [
        ev.ErrorReported("no such nickname: nobody", ids[2]),
        ev.ErrorReported("no such nickname: ghost", ids[4]),
    ]
    assert len(alice.of(ev.MembersListed)) == 1
