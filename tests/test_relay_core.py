"""The relay core as an endpoint: what it does with any datagram from anywhere, how its output
and timers are taken, shutdown; and that it stays sans I/O. Simulated network, virtual clock."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import udpchat.relay
from tests.fakeclient import join_datagram, quick_room_key, stray_session
from tests.relaysim import RELAY, Sink, client_addr, join, setup
from udpchat import messages as m
from udpchat import wire
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.events import DatagramDropped

pytestmark = pytest.mark.unit


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=1300), max_size=20), st.integers(0, 2**16))
def test_garbage_never_crashes_or_disturbs(garbage: list[bytes], seed: int) -> None:
    net, relay = setup(seed=seed)
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    assert alice.accept is not None
    # An off-path attacker does not know the token: a guess is one bit away at best.
    forged = bytes([alice.accept.token[0] ^ 1]) + alice.accept.token[1:]
    for g in garbage:
        net.inject(client_addr(7), RELAY, g)
        net.inject(client_addr(1), RELAY, msgpack.packb([1, 6, forged, 10**6, 0, 0, 0, False, g]))
    alice.send(m.Say("still here"))
    net.run(0.5)
    assert bob.of(m.ChatMessage)[-1].text == "still here"
    assert relay.member_nicks() == ["alice", "bob"]


def test_a_new_member_is_flushed_first_and_output_can_be_taken_in_batches() -> None:
    # notices unbatched, so that the JOINED goes out at once (test_relay_notices has the
    # batched room, where it waits for its window)
    config = RelayConfig(handshake_burst=1000, max_members_per_host=1024, notice_window=0)
    net, relay = setup(config)
    for i in range(100):
        join(net, f"m{i}", i)
    net.run(0.5)
    newcomer_addr = client_addr(500)
    seen: list[bytes] = []
    net.attach(newcomer_addr, Sink(seen))
    nonce = b"n" * 8
    net.inject(newcomer_addr, RELAY, wire.encode_hello(nonce))
    net.run(0.001)
    challenge = wire.decode_datagram(seen[-1])
    assert isinstance(challenge, wire.Challenge)
    net.detach(RELAY)  # from here on we drive the relay by hand
    relay.receive_datagram(join_datagram(nonce, challenge, "newcomer"), newcomer_addr, net.now)
    first = relay.datagrams_to_send(net.now, limit=8)
    # ACCEPT and WELCOME alone: the JOINED fan-out waits for the next call
    assert [addr for _, addr in first] == [newcomer_addr, newcomer_addr]
    assert isinstance(wire.decode_datagram(first[0][0]), wire.Accept)
    assert relay.next_timer() == float("-inf")  # more output is waiting
    rest: list[tuple[bytes, tuple[str, int]]] = []
    for _ in range(100):
        batch = relay.datagrams_to_send(net.now, limit=8)
        rest.extend(batch)
        if len(batch) < 8:
            break
    # everyone else gets the JOINED announcement, once
    announced = [addr for _, addr in first[2:] + rest]
    assert sorted(announced) == sorted(client_addr(i) for i in range(100))


def test_shutdown_tells_members() -> None:
    net, relay = setup()
    alice = join(net, "alice", 1)
    relay.shutdown("maintenance", net.now)
    assert net.run_until(lambda: relay.closed, 2)
    net.run(0.1)
    assert alice.of(m.Shutdown)[0].text == "maintenance"


# --- source port 0 ------------------------------------------------------------------------------

PORT_ZERO = ("127.0.0.1", 0)


def test_every_datagram_from_port_zero_is_dropped_unanswered() -> None:
    """protocol.md 3.1: nothing sent to port 0 can arrive, so nothing from it is answered,
    and no session moves there, even with a member's own token."""
    net, relay = setup()
    alice = join(net, "alice", 1)
    net.run(0.2)
    assert alice.accept is not None
    now = net.now
    rng = random.Random(5)
    nonce = rng.randbytes(8)
    version_9 = bytearray(wire.encode_hello(rng.randbytes(8)))
    version_9[1] = 9
    cookie = relay.gate.issue_cookie(nonce, PORT_ZERO, now)
    challenge = wire.Challenge(nonce, cookie, relay.relay_key, False)
    datagrams = [
        wire.encode_hello(nonce),  # 1200 bytes: would get a CHALLENGE
        join_datagram(nonce, challenge, "mallory"),
        stray_session(rng.randbytes(8)),  # unknown token: RESET
        stray_session(alice.accept.token, 10**6),  # a stranger's: fails to authenticate
        bytes(version_9),  # would get REJECT VERSION
        rng.randbytes(1200),
        b"",
    ]
    relay.datagrams_to_send(now)
    relay.events()
    before = relay.stats.datagrams_received
    for data in datagrams:
        relay.receive_datagram(data, PORT_ZERO, now)
    relay.handle_timer(now)
    assert relay.datagrams_to_send(now) == []
    events = relay.events()
    assert events == [DatagramDropped("from port 0", PORT_ZERO)] * len(datagrams)
    assert relay.stats.from_port_zero == len(datagrams)
    assert relay.stats.datagrams_received == before
    assert relay.member_nicks() == ["alice"]
    assert [mb.addr for mb in relay.members.values()] == [client_addr(1)]


def test_keyed_relay_drops_everything_from_port_zero() -> None:
    room_key = quick_room_key(b"key")
    relay = RelayCore(RelayConfig(), 0.0, random.Random(1).randbytes, room_key=room_key)
    cookie = relay.gate.issue_cookie(b"n" * 8, PORT_ZERO, 0.0)
    challenge = wire.Challenge(b"n" * 8, cookie, relay.relay_key, True)
    keyed_join = join_datagram(b"n" * 8, challenge, "alice", room_key=quick_room_key(b"key"))
    for data in (random.Random(4).randbytes(1200), wire.encode_hello(b"n" * 8), keyed_join):
        relay.receive_datagram(data, PORT_ZERO, 0.0)
    assert relay.datagrams_to_send(0.0) == []
    assert relay.stats.from_port_zero == 3 and relay.stats.bad_key == 0


# --- sans I/O ----------------------------------------------------------------------------------

IO_MODULES = {"socket", "select", "selectors", "threading", "asyncio", "time", "random", "secrets"}


def test_the_relay_package_does_no_io_of_its_own() -> None:
    """No socket, thread, clock or unseeded random source anywhere in udpchat.relay: the
    shell injects time and randomness (design notes, "pure protocol core")."""
    package = Path(udpchat.relay.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert {p.stem for p in modules} >= {"core", "gate", "sessions", "paths", "room", "room_log"}
    for path in modules:
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
        assert not imported & IO_MODULES, (path.name, imported & IO_MODULES)


def test_the_fan_out_of_a_post_leaves_before_the_posters_confirmation() -> None:
    net, relay = setup()
    clients = [join(net, nick, i) for i, nick in enumerate(("alice", "bob", "carol", "dave"))]
    net.run(1.0)  # joins announced and acknowledged: nothing else is waiting
    assert relay.datagrams_to_send(net.now) == []
    alice = clients[0]
    net.detach(RELAY)  # from here on we drive the relay by hand
    alice.send(m.Say("hello"))
    said = alice.datagrams_to_send(net.now)
    assert len(said) == 1
    relay.receive_datagram(said[0][0], client_addr(0), net.now)
    out = relay.datagrams_to_send(net.now)
    # one turn: the three copies first, then the POSTED (which also acknowledges the SAY)
    assert [addr for _, addr in out] == [client_addr(i) for i in (1, 2, 3)] + [client_addr(0)]
    for (data, _), client in zip(out, clients[1:] + clients[:1], strict=True):
        client.receive_datagram(data, RELAY, net.now)
    assert [type(c.received[-1]) for c in clients] == [m.Posted] + [m.ChatMessage] * 3
