"""The client session's handshake against a scripted relay: HELLO, CHALLENGE, JOIN, ACCEPT,
bound and unbound REJECTs, relay keys and room keys, on a simulated network."""

from __future__ import annotations

import random

import pytest

from tests.client_support import (
    RELAY,
    RELAY_STATIC,
    TIME,
    FakeRelay,
    client_addr,
    client_datagrams,
    drain,
    join_all,
    keyed_member,
    keyed_net,
    make_net,
    of,
    payloads,
    seeded,
    without_ids,
)
from tests.fakeclient import quick_room_key
from udpchat import events as ev
from udpchat import messages as msg
from udpchat import wire
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.noise import public_key
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.seal import PskDeriver
from udpchat.sim import PathModel, SimNetwork

pytestmark = pytest.mark.unit


def test_handshake_pads_hello_and_join_and_ends_welcomed() -> None:
    net, relay, (alice,) = make_net()
    sizes: list[tuple[int, int]] = []
    net.taps.append(lambda src, dst, data: sizes.append((wire.datagram_type(data), len(data))))
    alice.connect(net.now)
    assert alice.state is SessionState.CONNECTING
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 1)
    assert (wire.DatagramType.HELLO, 1200) in sizes
    assert (wire.DatagramType.JOIN, 1200) in sizes
    welcomed = of(alice, ev.Welcomed)
    assert welcomed == [ev.Welcomed("alice", ("alice",), resumed=False)]
    assert alice.members == ("alice",)
    assert relay.joins[0].resume is None
    # HELLO -> CHALLENGE took 20 ms: the link starts from that sample, not from 100 ms.
    assert alice.stats.srtt == pytest.approx(0.02, abs=0.005)


def test_hello_retransmits_doubling_to_2s_then_join_times_out() -> None:
    net, relay, (alice,) = make_net()
    relay.answer_handshake = False
    alice.connect(net.now)
    net.run(12)
    hellos = client_datagrams(relay, wire.Hello)
    times = [round(t - 0.01, 3) for t, _ in hellos]
    assert times == [0.0, 0.25, 0.75, 1.75, 3.75, 5.75, 7.75, 9.75]
    assert len({d.nonce for _, d in hellos if isinstance(d, wire.Hello)}) == 1
    closed = of(alice, ev.Closed)
    assert len(closed) == 1 and isinstance(closed[0], ev.Closed)
    assert "the relay does not answer" in closed[0].reason
    assert "room key" not in closed[0].reason
    assert alice.state is SessionState.CLOSED
    assert alice.next_timer() is None


def test_join_timeout_with_a_room_key() -> None:
    """Nothing answers: the HELLO went out in the clear, nothing was derived or sealed."""
    derived: list[bytes] = []

    def room_key(relay_key: bytes) -> bytes:
        derived.append(relay_key)
        return quick_room_key(b"k")(relay_key)

    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0, room_key=room_key)
    session.connect(0.0)
    (hello,) = payloads(session, 0.0)
    assert len(hello) == wire.MIN_INITIAL_SIZE
    assert isinstance(wire.decode_datagram(hello), wire.Hello)
    now = 0.0
    for _ in range(100):
        deadline = session.next_timer()
        if deadline is None:
            break
        now = max(now, deadline)
        session.handle_timer(now)
        payloads(session, now)
    (closed,) = [e for e in session.events() if isinstance(e, ev.Closed)]
    assert closed.reason == "the relay does not answer (check the address and port)"
    assert now == pytest.approx(10.0)
    assert derived == []


def test_join_is_retransmitted_and_a_lost_accept_is_recovered() -> None:
    net, relay, (alice,) = make_net()
    dropped: list[bytes] = []
    original = net.send

    def drop_first_accept(src: Address, dst: Address, data: bytes) -> None:
        if src == RELAY and wire.datagram_type(data) == wire.DatagramType.ACCEPT and not dropped:
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
    alice.connect(net.now)
    net.run(30)
    assert drain(alice) == [
        ev.JoinRejected(wire.RejectCode.RELAY_FULL, "the room is full"),
        ev.Closed("the room is full"),
    ]
    assert len(client_datagrams(relay, wire.Join)) == 1


def test_reject_with_a_foreign_nonce_is_ignored() -> None:
    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0)
    session.connect(0.0)
    session.receive_datagram(wire.encode_reject(b"x" * 8, 1, "go away"), RELAY, 0.01)
    assert session.state is SessionState.CONNECTING
    assert session.stats.wrong_session == 1
    assert session.events() == []


def test_a_plain_reject_is_ours_only_when_bound_to_a_datagram_we_sent() -> None:
    """protocol.md 4: anyone who knows the relay's address can send a REJECT; only one bound
    to our nonce or to a datagram of ours ends the join, and never one without a nonce."""
    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0, quick_room_key(b"k"))
    session.connect(0.0)
    (hello,) = payloads(session, 0.0)
    inner = wire.decode_datagram(hello)
    assert isinstance(inner, wire.Hello)
    bad_key = wire.RejectCode.BAD_KEY
    # No nonce at all: not even a valid datagram.
    session.receive_datagram(
        wire.pack([wire.PROTOCOL_VERSION, wire.DatagramType.REJECT, b"", bad_key, "x"]), RELAY, 0.01
    )
    assert session.stats.malformed == 1
    # A made-up nonce: not proof that the relay sent it.
    session.receive_datagram(wire.encode_reject(b"x" * 8, bad_key, "x"), RELAY, 0.01)
    assert session.stats.wrong_session == 1
    assert session.state is SessionState.CONNECTING
    assert session.events() == []
    # Bound to the HELLO we sent: the relay's answer.
    reject = wire.encode_reject(wire.request_hash(hello), bad_key, "wrong room key")
    session.receive_datagram(reject, RELAY, 0.02)
    assert session.events() == [
        ev.JoinRejected(wire.RejectCode.BAD_KEY, "wrong room key"),
        ev.Closed("wrong room key"),
    ]


def test_a_reject_bound_to_our_nonce_is_ours() -> None:
    """Only the relay, or someone on the path who could as well drop our datagrams, knows
    the nonce (protocol.md 9)."""
    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0)
    session.connect(0.0)
    (hello,) = payloads(session, 0.0)
    inner = wire.decode_datagram(hello)
    assert isinstance(inner, wire.Hello)
    session.receive_datagram(wire.encode_reject(inner.nonce, 3, "the relay is full"), RELAY, 0.01)
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

    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0, counting)
    session.connect(0.0)
    (hello,) = payloads(session, 0.0)
    hello_datagram = wire.decode_datagram(hello)
    assert isinstance(hello_datagram, wire.Hello)
    nonce = hello_datagram.nonce
    relay_key = public_key(bytes(range(32)))
    session.receive_datagram(_challenge(nonce, b"c" * 20, relay_key), RELAY, 0.01)
    (join,) = payloads(session, 0.01)
    assert len(join) == wire.MIN_INITIAL_SIZE
    session.receive_datagram(_challenge(nonce, b"e" * 20, relay_key), RELAY, 0.03)
    (again,) = payloads(session, 0.03)
    retry = session.next_timer()
    assert retry is not None
    session.handle_timer(retry)
    (retransmitted,) = payloads(session, retry)
    assert join != again and retransmitted == again
    assert derived == [relay_key]
    # Another relay key: taken once per HELLO (a relay restarted as another identity).
    others = [public_key(bytes([i + 1]) * 32) for i in range(5)]
    for other in others:
        session.receive_datagram(_challenge(nonce, b"d" * 20, other), RELAY, 0.5)
    assert len(payloads(session, 0.5)) == 1
    assert session.stats.unexpected == 4
    assert derived == [relay_key, others[0]]


def test_a_relay_key_the_trust_callback_refuses_ends_the_join() -> None:
    """The shell's pin check: its refusal is final and no JOIN is sent to that relay."""
    seen: list[bytes] = []

    def pinned(relay_key: bytes) -> str | None:
        seen.append(relay_key)
        return "the relay's key changed"

    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0, trust=pinned)
    session.connect(0.0)
    (hello,) = payloads(session, 0.0)
    hello_datagram = wire.decode_datagram(hello)
    assert isinstance(hello_datagram, wire.Hello)
    relay_key = public_key(bytes(range(32)))
    session.receive_datagram(
        _challenge(hello_datagram.nonce, b"c" * 20, relay_key, False), RELAY, 0.01
    )
    assert payloads(session, 0.01) == []
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

    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0, trust=trust)
    session.connect(0.0)
    (hello,) = payloads(session, 0.0)
    nonce = wire.decode_datagram(hello).nonce  # type: ignore[union-attr]
    session.receive_datagram(_challenge(nonce, b"c" * 20, bad_key, False), RELAY, 0.01)
    assert session.state is SessionState.CONNECTING and seen == []
    relay_key = public_key(bytes(range(32)))
    session.receive_datagram(_challenge(nonce, b"c" * 20, relay_key, False), RELAY, 0.02)
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
                code = wire.RejectCode.BAD_KEY
                fields = [wire.PROTOCOL_VERSION, wire.DatagramType.REJECT, nonce, code, "forged"]
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
    alice.say("after the restart", net.now)
    assert net.run_until(lambda: alice.stats.reconnects == 1, 10)
    assert alice.state is SessionState.JOINED
    assert len(forged) > before + 4
    assert of(alice, ev.JoinRejected) == [] and of(alice, ev.Closed) == []


def test_join_timeout_quotes_an_unverifiable_reject() -> None:
    """A relay that does not answer, and somebody else who does: the join runs to its
    deadline and then says what the unverifiable answer was."""
    net, relay, (alice,) = make_net()
    relay.answer_handshake = False
    forge_rejects(net, client_addr(0))
    alice.connect(net.now)
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 15)
    assert net.now == pytest.approx(10.0, abs=0.05)
    (closed,) = of(alice, ev.Closed)
    assert isinstance(closed, ev.Closed)
    assert closed.reason == (
        "the relay does not answer (check the address and port); an unverifiable reply said: forged"
    )
    assert of(alice, ev.JoinRejected) == []


def test_sealed_session_end_to_end() -> None:
    """A relay with a key: HELLO, CHALLENGE, JOIN and ACCEPT are the handshake; everything
    after it is sealed with the session's keys, padded to a bucket, both ways."""
    seen: list[tuple[Address, int, int]] = []
    net = SimNetwork(seed=1, default=PathModel(delay=0.01))
    net.taps.append(lambda src, dst, data: seen.append((src, wire.datagram_type(data), len(data))))
    relay = FakeRelay()
    relay.room_key = quick_room_key(b"k")
    net.attach(RELAY, relay)
    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0, quick_room_key(b"k"))
    net.attach(client_addr(0), session)
    join_all(net, [session])
    session.say("secret", net.now)
    assert net.run_until(lambda: session.idle, 2)
    assert without_ids(relay.only_session().received) == [msg.Say("secret")]
    handshake = {wire.DatagramType.HELLO, wire.DatagramType.JOIN}
    assert [k for a, k, _ in seen if a != RELAY and k in handshake] == [1, 3]
    for _, kind, size in seen:
        if kind in wire.SESSION_TYPES:
            assert size - 10 - 16 in (64, 256, 512, 1152)  # type, token, pn < 128, tag
