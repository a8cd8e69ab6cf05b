"""Every session encrypted and authenticated (protocol.md 8, 9), as an attacker on the path
and an attacker off it would try it: sniffing, replaying and flipping bits of every datagram
from any address, a relay with another identity, forged and genuine RESETs, and the nonces
under loss, retransmission and rekeying. The relay and the clients are the real cores, on the
simulated network with a virtual clock; one sniffer test runs on real sockets."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from tests.client_support import of
from tests.fakeclient import quick_room_key
from udpchat import events as ev
from udpchat import handshake as hs
from udpchat import wire
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.link import LinkConfig
from udpchat.noise import public_key
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.events import MemberMoved
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.seal import PskDeriver, SessionCipher
from udpchat.sim import PathModel, SimNetwork
from udpchat.transport import DatagramTransport

# One tier per test: the simulator (unit) and one sniffer on real sockets (e2e).
pytestmark = pytest.mark.timeout(120)

RELAY: Address = ("10.0.0.1", 4000)
ATTACKER: Address = ("10.6.6.6", 6666)
STATIC = bytes(range(100, 132))
OTHER_STATIC = bytes(range(1, 33))
TIME = 1_790_000_000
# Long and distinctive, so that finding one by chance in random ciphertext is hopeless.
NICKS = ("alice_wonderland", "bob_the_builder", "carol_the_singer")
RENAMED = "dave_who_was_carol"
SECRETS = (
    "the treasure is buried under the old oak tree",
    "meet me at the lighthouse at midnight",
    "private: the password is swordfish-42",
)


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def client_addr(i: int) -> Address:
    return (f"10.0.1.{i + 1}", 5000 + i)


def room(
    key: bytes | None = None,
    model: PathModel | None = None,
    seed: int = 1,
    nicks: tuple[str, ...] = NICKS,
    link: LinkConfig | None = None,
    trust: Callable[[bytes], str | None] | None = None,
) -> tuple[SimNetwork, RelayCore, list[ClientSession]]:
    """A relay core and a client session per nickname on a simulated network."""
    net = SimNetwork(seed=seed, default=model or PathModel(delay=0.005))
    room_key: PskDeriver | None = quick_room_key(key) if key is not None else None
    relay_config = RelayConfig(link=replace_link(RelayConfig().link, link))
    relay = RelayCore(relay_config, 0.0, seeded(seed), TIME, room_key, static_key=STATIC)
    net.attach(RELAY, relay)
    sessions = []
    for i, nick in enumerate(nicks):
        config = ClientConfig(nick, RELAY, link=link or LinkConfig(), join_timeout=30.0)
        session = ClientSession(config, seeded(seed * 100 + i), 0.0, room_key, TIME, trust=trust)
        net.attach(client_addr(i), session)
        sessions.append(session)
    return net, relay, sessions


def replace_link(base: LinkConfig, override: LinkConfig | None) -> LinkConfig:
    """The relay's link configuration with the test's key phase length, if it sets one."""
    if override is None:
        return base
    return replace(base, rekey_interval=override.rekey_interval)


def join_all(net: SimNetwork, nodes: list[ClientSession], timeout: float = 10.0) -> None:
    for node in nodes:
        node.connect(net.now)
    assert net.run_until(lambda: all(n.state is SessionState.JOINED for n in nodes), timeout), [
        n.state for n in nodes
    ]


def chat(net: SimNetwork, nodes: list[ClientSession]) -> None:
    """Everything that puts a nickname, text or a member list on the wire."""
    alice, bob, carol = nodes
    alice.say(SECRETS[0], net.now)
    bob.action(SECRETS[1], net.now)
    carol.private(NICKS[0], SECRETS[2], net.now)
    alice.who(net.now)
    carol.change_nick(RENAMED, net.now)
    assert net.run_until(lambda: all(n.idle for n in nodes) and len(heard(bob)) >= 1, 10)
    net.run(0.5)


def heard(node: ClientSession) -> list[str]:
    return [e.text for e in of(node, ev.MessageReceived) if isinstance(e, ev.MessageReceived)]


def forbidden_strings() -> list[bytes]:
    """What a sniffer must not find, in the encodings it could appear in."""
    # Whole lines, and their longest word alone (long enough never to turn up by chance).
    words = [*NICKS, RENAMED, *SECRETS, *(max(s.split(), key=len) for s in SECRETS)]
    assert min(len(word) for word in words) >= 8
    out = []
    for word in words:
        raw = word.encode()
        out.append(raw)
        out.append(wire.pack(word))  # with its msgpack str header
    return out


def assert_nothing_readable(captured: list[bytes]) -> None:
    assert captured
    everything = b"\n".join(captured)
    for needle in forbidden_strings():
        assert needle not in everything, needle


@pytest.mark.unit
@pytest.mark.parametrize("key", [None, b"open sesame"], ids=["no-room-key", "room-key"])
def test_a_sniffer_on_the_simulator_reads_no_nickname_text_or_member_list(
    key: bytes | None,
) -> None:
    net, relay, nodes = room(key)
    captured: list[bytes] = []
    net.taps.append(lambda src, dst, data: captured.append(data))
    join_all(net, nodes)
    chat(net, nodes)
    alice, bob, _ = nodes
    assert SECRETS[0] in heard(bob)
    assert [e.text for e in of(alice, ev.PrivateReceived) if isinstance(e, ev.PrivateReceived)] == [
        SECRETS[2]
    ]
    assert sorted(relay.member_nicks()) == sorted([NICKS[0], NICKS[1], RENAMED])
    assert_nothing_readable(captured)
    kinds = Counter(wire.datagram_type(data) for data in captured)
    assert set(kinds) <= {1, 2, 3, 4, 6, 7, 8}
    assert kinds[wire.DatagramType.DATA] > 10


class Sniffed:
    """A transport that keeps a copy of every datagram it sends and receives."""

    def __init__(self, inner: DatagramTransport) -> None:
        self.inner = inner
        self.captured: list[bytes] = []

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    def sendto(self, data: bytes, addr: Address) -> None:
        self.captured.append(data)
        self.inner.sendto(data, addr)

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        got = self.inner.recvfrom(timeout)
        if got is not None:
            self.captured.append(got[0])
        return got

    def wake(self) -> None:
        self.inner.wake()

    def close(self) -> None:
        self.inner.close()


@pytest.mark.e2e
@pytest.mark.timeout(30)
def test_a_sniffer_on_real_sockets_reads_no_nickname_text_or_member_list() -> None:
    """Every datagram through the relay's UDP socket, in both directions, during a chat."""
    server = RelayServer(RelayOptions(host="127.0.0.1", port=0))
    sniffed = server._transport = Sniffed(server._transport)
    server.start()
    clients: list[ChatClient] = []
    try:
        for nick in NICKS:
            options = ClientOptions(nick=nick, server=server.address, pace=False)
            clients.append(ChatClient(options).start())
        assert all(c.wait_joined(5) for c in clients)
        alice, bob, carol = clients
        alice.say(SECRETS[0])
        bob.action(SECRETS[1])
        carol.private(NICKS[0], SECRETS[2])
        alice.who()
        carol.change_nick(RENAMED)
        assert all(c.wait_idle(5) for c in clients)
        assert sorted(server.members()) == sorted([NICKS[0], NICKS[1], RENAMED])
    finally:
        for client in clients:
            client.close()
        server.stop(goodbye=False)
    assert_nothing_readable(sniffed.captured)
    assert server.stats.auth_failures == 0


# --- replays and bit flips of every datagram -----------------------------------------------


def captured_exchange(
    key: bytes | None,
) -> tuple[SimNetwork, RelayCore, list[ClientSession], list[tuple[Address, Address, bytes]]]:
    """Two members chat; one moves to a new port (so PATH_CHALLENGE and PATH_RESPONSE are
    on the wire too); every datagram in both directions is kept with its addresses."""
    net, relay, nodes = room(key, nicks=NICKS[:2])
    captured: list[tuple[Address, Address, bytes]] = []
    net.taps.append(lambda src, dst, data: captured.append((src, dst, data)))
    join_all(net, nodes)
    alice, bob = nodes
    alice.say(SECRETS[0], net.now)
    bob.say(SECRETS[1], net.now)
    assert net.run_until(lambda: all(n.idle for n in nodes), 5)
    moved = ("10.0.1.1", 7000)
    net.move(client_addr(0), moved)
    alice.say("from my new port", net.now)
    assert net.run_until(lambda: "from my new port" in heard(bob), 5)
    net.run(2.5)  # heartbeats: a bare ACK, then a PING and its answer (protocol.md 7.1)
    return net, relay, nodes, captured


def tampered(data: bytes, rng: random.Random, count: int) -> Iterator[bytes]:
    """``count`` copies of ``data``, each with one bit flipped: in the header, the sealed
    part, the tag."""
    for _ in range(count):
        copy = bytearray(data)
        i = rng.randrange(len(copy))
        copy[i] ^= 1 << rng.randrange(8)
        yield bytes(copy)


def observable(relay: RelayCore, nodes: list[ClientSession]) -> tuple[object, ...]:
    return (
        relay.room_seq,
        relay.member_nicks(),
        sorted((mb.nick, mb.addr, mb.token, mb.validated) for mb in relay.members.values()),
        [tuple(heard(n)) for n in nodes],
        [n.state for n in nodes],
        [len(of(n, ev.ConnectionLost)) for n in nodes],
    )


@pytest.mark.unit
@pytest.mark.parametrize("key", [None, b"open sesame"], ids=["no-room-key", "room-key"])
def test_replayed_and_bit_flipped_copies_of_every_datagram_change_nothing(
    key: bytes | None,
) -> None:
    """Each datagram of the exchange, replayed as it was and with single bits flipped, sent
    to where it went from where it came and from another address: the room, the sessions
    and their addresses stay as they were, and the chat goes on."""
    net, relay, nodes, captured = captured_exchange(key)
    kinds = {wire.datagram_type(data) for _, _, data in captured}
    assert kinds == {1, 2, 3, 4, 6, 7, 8, 10, 11}, kinds  # every kind but REJECT and RESET
    relay.events()
    before = observable(relay, nodes)
    failures = relay.stats.auth_failures
    rng = random.Random(7)
    for src, dst, data in captured:
        for copy in (data, *tampered(data, rng, 3)):
            for source in (src, ATTACKER):
                if dst == RELAY:
                    net.inject(source, RELAY, copy)
                else:
                    net.inject(RELAY, dst, copy)  # as if the relay sent it
        net.run(0.01)
    net.run(1.0)
    assert observable(relay, nodes) == before
    assert not [e for e in relay.events() if isinstance(e, MemberMoved)]
    assert relay.stats.auth_failures > failures
    alice, bob = nodes
    bob.say("after all that", net.now)
    assert net.run_until(lambda: "after all that" in heard(alice), 5)


# --- the handshake under loss ---------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("key", [None, b"open sesame"], ids=["no-room-key", "room-key"])
def test_handshake_under_30_percent_loss_and_reordering(key: bytes | None) -> None:
    """Every member joins and chats; a retransmitted JOIN is the same bytes and is answered
    with the same ACCEPT bytes: one handshake per session."""
    model = PathModel(loss=0.3, reorder=0.3, duplicate=0.05, delay=0.01, jitter=0.01)
    net, relay, nodes = room(key, model=model, seed=11)
    sent: list[tuple[Address, Address, bytes]] = []
    net.taps.append(lambda src, dst, data: sent.append((src, dst, data)))
    join_all(net, nodes, timeout=60)
    for i, node in enumerate(nodes):
        node.say(f"line {i}", net.now)
    assert net.run_until(lambda: all(n.idle for n in nodes), 60)
    net.run(2)
    for node in nodes:
        assert sorted(heard(node)) == sorted(f"line {i}" for i in range(3))
    joins: dict[bytes, set[bytes]] = {}
    accepts: dict[bytes, set[bytes]] = {}
    for _, _, data in sent:
        datagram = wire.decode_datagram(data)
        if isinstance(datagram, wire.Join):
            joins.setdefault(datagram.nonce + datagram.cookie, set()).add(data)
        elif isinstance(datagram, wire.Accept):
            accepts.setdefault(datagram.token, set()).add(data)
    assert all(len(copies) == 1 for copies in joins.values())  # one handshake per cookie
    assert len(accepts) == len(nodes) == len(relay.members)  # one session per member
    assert all(len(copies) == 1 for copies in accepts.values())
    assert net.stats.dropped > 10 and net.stats.reordered > 5


# --- the relay's identity ---------------------------------------------------------------------


def pin(relay_key: bytes) -> Callable[[bytes], str | None]:
    def check(offered: bytes) -> str | None:
        if offered == relay_key:
            return None
        return f"the relay's key changed (pinned {relay_key.hex()[:16]}...)"

    return check


@pytest.mark.unit
def test_a_relay_with_another_static_key_is_refused_by_a_pinning_client() -> None:
    """A man in the middle (or a relay restarted as another identity) answers with another
    static key: the client that pinned the real one sends it nothing and ends the join."""
    net, relay, (alice,) = room(nicks=NICKS[:1], trust=pin(public_key(STATIC)))
    join_all(net, [alice])
    net.detach(RELAY)
    impostor = RelayCore(RelayConfig(), net.now, seeded(5), TIME, static_key=OTHER_STATIC)
    net.attach(RELAY, impostor)
    joins: list[bytes] = []
    net.taps.append(
        lambda src, dst, data: joins.append(data) if wire.datagram_type(data) == 3 else None
    )
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 30)
    (closed,) = of(alice, ev.Closed)
    assert isinstance(closed, ev.Closed) and closed.reason.startswith("the relay's key changed")
    assert joins == [] and impostor.member_nicks() == []
    # A fresh client pinned to the real key never joins the impostor either.
    newcomer = ClientSession(
        ClientConfig("newcomer", RELAY), seeded(9), net.now, trust=pin(relay.relay_key)
    )
    net.attach(client_addr(5), newcomer)
    newcomer.connect(net.now)
    assert net.run_until(lambda: newcomer.state is SessionState.CLOSED, 5)
    assert impostor.member_nicks() == []


@pytest.mark.unit
def test_an_accept_from_someone_without_the_relays_key_is_dropped() -> None:
    """On the path, an attacker answers the JOIN with an ACCEPT of its own: without the
    relay's static private key its Noise message does not authenticate."""
    net, relay, (alice,) = room(nicks=NICKS[:1])

    def forge_accept(src: Address, dst: Address, data: bytes) -> None:
        if wire.datagram_type(data) == wire.DatagramType.JOIN:
            join = wire.decode_datagram(data)
            assert isinstance(join, wire.Join)
            try:
                responder, _ = hs.read_join(OTHER_STATIC, join, None)
            except Exception:
                # It cannot even read message 1 (encrypted to the relay's key): a guess.
                forged = wire.encode_accept(join.nonce, b"F" * 8, random.randbytes(80))
            else:  # pragma: no cover - message 1 is encrypted to the real relay
                forged, _ = hs.accept(
                    responder,
                    join.nonce,
                    b"F" * 8,
                    wire.AcceptPayload(b"e" * 8, 1000, 10000, bytes(16)),
                    bytes(32),
                    False,
                )
            net.inject(RELAY, src, forged)

    net.taps.append(forge_accept)
    join_all(net, [alice])
    assert alice.stats.malformed >= 1
    assert [mb.nick for mb in relay.members.values()] == [NICKS[0]]


# --- RESET -----------------------------------------------------------------------------------


@pytest.mark.unit
def test_a_forged_reset_is_ignored_and_a_real_one_after_a_restart_is_acted_on_at_once() -> None:
    net, _relay, (alice, bob) = room(nicks=NICKS[:2])
    join_all(net, [alice, bob])
    link = alice._link
    assert link is not None
    for forged in (bytes(16), random.Random(3).randbytes(16)):
        net.inject(RELAY, client_addr(0), wire.encode_reset(link.token, forged))
    net.run(0.5)
    assert alice.state is SessionState.JOINED and not of(alice, ev.ConnectionLost)
    # The relay restarts with the same identity: its RESET proves itself.
    net.detach(RELAY)
    net.attach(RELAY, RelayCore(RelayConfig(), net.now, seeded(8), TIME, static_key=STATIC))
    restarted_at = net.now
    alice.say("are you there?", net.now)
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 2)
    assert net.now - restarted_at < 0.1  # at once, not after the silence timeout
    assert of(alice, ev.ConnectionLost) == [ev.ConnectionLost("the relay lost our session")]
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 5)


@pytest.mark.unit
def test_a_relay_restarted_as_another_identity_cannot_reset_its_predecessors_sessions() -> None:
    net, _relay, (alice,) = room(nicks=NICKS[:1])
    join_all(net, [alice])
    net.detach(RELAY)
    net.attach(RELAY, RelayCore(RelayConfig(), net.now, seeded(8), TIME, static_key=OTHER_STATIC))
    restarted_at = net.now
    alice.say("are you there?", net.now)
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    assert of(alice, ev.ConnectionLost) == [ev.ConnectionLost("the relay went silent")]
    assert net.now - restarted_at >= 4.9  # noticed by silence: the RESETs did not count
    assert alice.stats.malformed > 0


# --- nonces ------------------------------------------------------------------------------------


@pytest.mark.unit
def test_no_key_and_nonce_pair_repeats_across_retransmissions_and_rekeys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lossy, duplicating, reordering run with a key phase every 8 packet numbers: every
    datagram sealed in it, by every end, uses a (key, nonce) pair of its own."""
    used: list[tuple[bytes, int]] = []
    original = SessionCipher.seal

    def recording(
        self: SessionCipher, kind: wire.DatagramType, token: bytes, pn: int, fields: bytes
    ) -> bytes:
        found = self.sending.key(self.sending.phase_of(pn))
        assert found is not None
        used.append((found[0], pn))
        return original(self, kind, token, pn, fields)

    monkeypatch.setattr(SessionCipher, "seal", recording)
    model = PathModel(loss=0.2, duplicate=0.1, reorder=0.2, delay=0.005, jitter=0.005)
    net, relay, nodes = room(b"open sesame", model=model, seed=3, link=LinkConfig(rekey_interval=8))
    join_all(net, nodes, timeout=60)
    for round_ in range(15):
        for node in nodes:
            node.say(f"{node.nick} {round_} " + "x" * 300, net.now)
        net.run(0.05)
    assert net.run_until(lambda: all(n.idle for n in nodes), 60)
    net.run(1)
    for node in nodes:
        assert len([t for t in heard(node) if " x" not in t]) == 0
        assert len(heard(node)) == 45  # 15 own confirmations, 30 from the others
    assert len(used) == len(set(used)), "a (key, nonce) pair was used twice"
    keys = {key for key, _ in used}
    assert len(keys) > 20  # many key phases, in every direction
    assert sum(n.stats.retransmissions for n in nodes) > 0
    assert relay.stats.auth_failures == 0


@pytest.mark.unit
def test_fan_out_seals_each_datagram_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """protocol.md 8: keys differ per member, so a message fanned out to N members costs N
    seals, one per datagram, and nothing more: every session datagram the relay sends was
    sealed exactly once."""
    seals = Counter[bytes]()
    original = SessionCipher.seal

    def counting(
        self: SessionCipher, kind: wire.DatagramType, token: bytes, pn: int, fields: bytes
    ) -> bytes:
        datagram = original(self, kind, token, pn, fields)
        seals[datagram] += 1
        return datagram

    monkeypatch.setattr(SessionCipher, "seal", counting)
    nicks = tuple(f"member_{i}" for i in range(8))
    net, _relay, nodes = room(nicks=nicks)
    join_all(net, nodes)
    assert net.run_until(lambda: all(n.idle for n in nodes), 5)
    sent: list[tuple[Address, bytes]] = []
    net.taps.append(lambda src, dst, data: sent.append((src, data)))
    seals.clear()
    nodes[0].say("one line for everyone", net.now)
    assert net.run_until(lambda: all("one line for everyone" in heard(n) for n in nodes), 5)
    net.run(0.1)
    session_datagrams = [d for _, d in sent if wire.datagram_type(d) in wire.SESSION_TYPES]
    from_relay = [
        d for src, d in sent if src == RELAY and wire.datagram_type(d) == wire.DatagramType.DATA
    ]
    assert len(from_relay) >= len(nodes)  # the fan-out to 7 and POSTED to the sender
    # Every seal went on the wire once, and every session datagram was sealed once.
    assert sum(seals.values()) == len(session_datagrams) == len(set(session_datagrams))
    assert set(seals) == set(session_datagrams)
