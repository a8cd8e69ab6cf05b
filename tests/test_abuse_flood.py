"""Flood control and caps (protocol.md 6.5): token buckets, slow readers, handshake limits."""

from __future__ import annotations

import random
import socket
import time

import pytest

from tests.fakeclient import FakeClient, join_datagram
from udpchat import events as ev
from udpchat import messages as m
from udpchat import wire
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.link import LinkConfig
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.sim import Address, PathModel, SimNetwork

pytestmark = pytest.mark.timeout(60)

RELAY: Address = ("127.0.0.1", 9000)
LOCALHOST = "127.0.0.1"


def client_addr(i: int, host: str = "127.0.0.1") -> Address:
    return (host, 40000 + i)


def setup(config: RelayConfig | None = None) -> tuple[SimNetwork, RelayCore]:
    net = SimNetwork(seed=3, default=PathModel())
    relay = RelayCore(config or RelayConfig(), 0.0, random.Random(3).randbytes)
    net.attach(RELAY, relay)
    return net, relay


def join(net: SimNetwork, nick: str, i: int, host: str = "127.0.0.1") -> FakeClient:
    client = FakeClient(nick, RELAY, seed=i)
    net.attach(client_addr(i, host), client)
    net.run_until(lambda: client.joined or client.reject is not None, 5)
    return client


class Recorder:
    def __init__(self) -> None:
        self.events: list[ev.ClientEvent] = []

    def __call__(self, event: ev.ClientEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]


def live_member(nick: str, server: Address) -> tuple[ChatClient, Recorder]:
    recorder = Recorder()
    client = ChatClient(
        ClientOptions(nick=nick, server=server, reconnect=False, pace=False), recorder
    )
    client.start()
    assert client.wait_joined(10), nick
    return client, recorder


def wait_for(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- the per-member token bucket, live ----------------------------------------------------------


@pytest.mark.e2e
def test_a_member_over_its_bucket_is_refused_and_nothing_is_doubled_or_reordered() -> None:
    config = RelayConfig(flood_burst=10, flood_rate=5.0, shutdown_grace=0.3)
    server = RelayServer(RelayOptions(host=LOCALHOST, port=0, config=config)).start()
    clients: list[ChatClient] = []
    try:
        alice, alice_log = live_member("alice", server.address)
        bob, bob_log = live_member("bob", server.address)
        clients += [alice, bob]
        start = time.monotonic()
        ids = [alice.say(f"spam {i}") for i in range(40)]
        assert alice.wait_idle(10)
        assert wait_for(lambda: len(alice_log.of(ev.MessageRefused)) + _own(alice_log) == 40, 10)
        elapsed = time.monotonic() - start
        posted = [e for e in alice_log.of(ev.MessageReceived) if e.own]
        refused = alice_log.of(ev.MessageRefused)
        assert config.flood_burst <= len(posted) <= config.flood_burst + config.flood_rate * elapsed
        assert refused and all("flood control" in e.reason for e in refused)
        assert sorted([e.local_id for e in posted] + [e.local_id for e in refused]) == ids
        # bob sees exactly the posted ones: once each, in alice's order and the room's
        assert wait_for(lambda: len(bob_log.of(ev.MessageReceived)) >= len(posted), 5)
        time.sleep(0.2)
        seen = [e for e in bob_log.of(ev.MessageReceived) if e.nick == "alice"]
        assert [e.text for e in seen] == [e.text for e in posted]
        assert [e.seq for e in seen] == [e.seq for e in posted]
        assert [e.seq for e in seen] == sorted({e.seq for e in seen})
        texts = [int(e.text.split()[1]) for e in seen]
        assert texts == sorted(texts)
        # the bucket refills: a little later alice may speak again
        time.sleep(0.5)
        alice.say("after a pause")
        assert wait_for(lambda: bob_log.of(ev.MessageReceived)[-1].text == "after a pause", 5)
    finally:
        for client in clients:
            client.close()
        server.stop(goodbye=False)


def _own(log: Recorder) -> int:
    return sum(1 for e in log.of(ev.MessageReceived) if e.own)


@pytest.mark.unit
def test_private_messages_share_the_bucket() -> None:
    net, _ = setup(RelayConfig(flood_burst=3, flood_rate=1.0))
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    for i in range(6):
        alice.send(m.PrivateSend("bob", f"psst {i}"))
    net.run(0.5)
    assert [p.text for p in bob.of(m.Private)] == ["psst 0", "psst 1", "psst 2"]
    errors = alice.of(m.Error)
    # one answer each; only the first refusal of the burst says why (protocol.md 6.5)
    assert [e.text[:13] for e in errors] == ["flood control", "", ""]


# --- a member that stops reading ------------------------------------------------------------


@pytest.mark.unit
def test_a_member_that_never_acknowledges_is_dropped_without_stalling_the_others() -> None:
    # A small queue per member on the relay, so that 24 messages of 15 KB overflow it.
    net, relay = setup(RelayConfig(flood_burst=20, link=LinkConfig(send_buffer=128 * 1024)))
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    sloth = join(net, "sloth", 3)
    assert sloth.joined
    net.set_path(RELAY, client_addr(3), PathModel(loss=1.0))  # it hears nothing, acks nothing
    big = "x" * 15_000
    start = net.now
    count = 12
    for i in range(count):
        alice.send(m.Say(f"{i} {big}"))
        bob.send(m.Say(f"{i} {big}"))
    assert net.run_until(
        lambda: len(alice.of(m.ChatMessage)) == count and len(bob.of(m.ChatMessage)) == count,
        10,
    )
    took = net.now - start
    assert "sloth" not in relay.member_nicks()
    for c in (alice, bob):
        (left,) = c.of(m.Left)
        assert (left.nick, left.reason, left.text) == (
            "sloth",
            m.LeaveReason.DROPPED,
            "could not keep up",
        )
        seqs = [s for s, _ in c.room_events()]
        assert seqs == sorted(set(seqs))
        other = bob if c is alice else alice
        assert [x.text.split()[0] for x in c.of(m.ChatMessage)] == [str(i) for i in range(count)]
        assert all(x.nick == other.nick for x in c.of(m.ChatMessage))
    assert took < relay.config.timeout  # dropped for its queue, long before any timeout


@pytest.mark.e2e
def test_live_member_that_stops_reading_is_dropped_and_the_room_goes_on() -> None:
    config = RelayConfig(
        flood_burst=20, shutdown_grace=0.3, link=LinkConfig(send_buffer=128 * 1024)
    )
    server = RelayServer(RelayOptions(host=LOCALHOST, port=0, config=config)).start()
    clients: list[ChatClient] = []
    sloth_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        alice, alice_log = live_member("alice", server.address)
        bob, bob_log = live_member("bob", server.address)
        clients += [alice, bob]
        # sloth does a real handshake by hand, then never reads its socket again
        sloth_sock.bind((LOCALHOST, 0))
        sloth_sock.settimeout(2)
        nonce = b"sloth-01"
        sloth_sock.sendto(wire.encode_hello(nonce), server.address)
        challenge = wire.decode_datagram(sloth_sock.recv(2048))
        assert isinstance(challenge, wire.Challenge)
        sloth_sock.sendto(join_datagram(nonce, challenge, "sloth"), server.address)
        assert isinstance(wire.decode_datagram(sloth_sock.recv(2048)), wire.Accept)
        assert wait_for(lambda: "sloth" in server.members(), 5)
        big = "y" * 15_000
        for i in range(12):
            alice.say(f"{i} {big}")
            bob.say(f"{i} {big}")
        for client, log in ((alice, alice_log), (bob, bob_log)):
            assert client.wait_idle(15)
            assert wait_for(lambda log=log: len(_others(log)) == 12, 10)
            assert [e.text.split()[0] for e in _others(log)] == [str(i) for i in range(12)]
            seqs = [e.seq for e in log.of(ev.MessageReceived)]
            assert seqs == sorted(set(seqs))
        assert wait_for(lambda: "sloth" not in server.members(), 5)
        for log in (alice_log, bob_log):
            assert wait_for(lambda log=log: bool(log.of(ev.MemberLeft)), 5)
            (left,) = log.of(ev.MemberLeft)
            assert (left.nick, left.reason, left.text) == ("sloth", "dropped", "could not keep up")
    finally:
        for client in clients:
            client.close()
        sloth_sock.close()
        server.stop(goodbye=False)


def _others(log: Recorder) -> list[ev.MessageReceived]:
    return [e for e in log.of(ev.MessageReceived) if not e.own]


# --- handshakes per source address ------------------------------------------------------------


@pytest.mark.unit
def test_joins_are_capped_per_host_whatever_the_port() -> None:
    config = RelayConfig(handshake_burst=20, handshake_rate=5.0, max_members_per_host=1000)
    net, relay = setup(config)
    answers: dict[Address, list[wire.Datagram]] = {}

    def tap(src: Address, dst: Address, data: bytes) -> None:
        if src == RELAY:
            answers.setdefault(dst, []).append(wire.decode_datagram(data))

    net.taps.append(tap)
    nonces = {}
    for port in range(100):
        nonces[port] = bytes([port]) * 8
        net.inject(client_addr(port), RELAY, wire.encode_hello(nonces[port]))
    net.run(0.01)
    # HELLO costs the relay nothing and proves nothing: every one is answered.
    challenged = [a for a, got in answers.items() if isinstance(got[0], wire.Challenge)]
    assert len(challenged) == 100 and relay.stats.rate_limited == 0
    # JOINs with valid cookies are what the bucket of their host counts, and refused beyond
    for addr in challenged:
        (challenge,) = answers[addr]
        assert isinstance(challenge, wire.Challenge)
        net.inject(addr, RELAY, join_datagram(challenge.nonce, challenge, f"n{addr[1]}"))
    net.run(0.01)
    last = [answers[addr][1] for addr in challenged]  # what the JOIN got
    accepted = [a for a in last if isinstance(a, wire.Accept)]
    refused = [a for a in last if isinstance(a, wire.Reject)]
    assert len(accepted) == config.handshake_burst
    assert {r.code for r in refused} == {wire.RejectCode.TOO_MANY_ATTEMPTS}
    assert len(refused) == 100 - config.handshake_burst
    # another host has its own bucket
    assert join(net, "elsewhere", 1, host="10.9.9.9").joined
    # and the bucket refills at the configured rate
    net.run(1.0)
    assert join(net, "later", 2000).joined


@pytest.mark.unit
def test_source_table_stays_bounded_under_many_hosts() -> None:
    net, relay = setup(RelayConfig(max_sources=50))
    for i in range(300):
        host = f"10.0.{i // 250}.{i % 250 + 1}"
        assert join(net, f"h{i}", i, host=host).joined or i >= 50
    assert len(relay.gate.join_buckets) <= 50
    assert relay.stats.handshakes >= 300


@pytest.mark.unit
def test_members_are_capped() -> None:
    net, relay = setup(RelayConfig(max_members=5, handshake_burst=100))
    clients = [join(net, f"u{i}", i) for i in range(8)]
    assert sum(c.joined for c in clients) == 5
    refused = [c.reject for c in clients if c.reject is not None]
    assert [r.code for r in refused] == [wire.RejectCode.RELAY_FULL] * 3
    assert len(relay.members) == 5
