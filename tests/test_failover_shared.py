"""Client fail-over between relays of one shared room (protocol.md 6.8, 6.9), on the virtual
clock: relay cores on an in-memory ``SharedRoom``; one dies while members chat through both;
the members with a list move to the survivor and resume there, nobody sees them leave or
join, and only the member without a list is announced as gone, once, when the room notices
the relay's death."""

from __future__ import annotations

import pytest

from tests.client_support import TIME, client_addr, drain, of, seeded
from udpchat import events as ev
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.sim import PathModel, SimNetwork

memory_shared = pytest.importorskip("udpchat.relay.memory_shared")

pytestmark = pytest.mark.unit

A: Address = ("10.0.0.1", 4000)
B: Address = ("10.0.0.2", 4000)
CONFIG = RelayConfig(timeout=10.0, flood_burst=100, flood_rate=100.0)


def relay(room: memory_shared.SharedRoom, now: float, seed: int) -> RelayCore:
    """A relay of the shared room, with an identity of its own."""
    static = bytes((seed + i) % 256 for i in range(32))
    return RelayCore(
        CONFIG, now, seeded(seed), wall_offset=TIME, static_key=static, room_log=room.connect()
    )


def member(net: SimNetwork, i: int, nick: str, relays: tuple[Address, ...]) -> ClientSession:
    config = ClientConfig(nick, relays[0], fallbacks=relays[1:])
    session = ClientSession(config, seeded(100 + i), net.now, wall_offset=TIME)
    net.attach(client_addr(i), session)
    session.connect(net.now)
    assert net.run_until(lambda: session.state is SessionState.JOINED, 10)
    return session


def chat(events: list[ev.ClientEvent]) -> list[tuple[int, str, str]]:
    return [(e.seq, e.nick, e.text) for e in events if isinstance(e, ev.MessageReceived)]


def kinds(events: list[ev.ClientEvent], *types: type[ev.ClientEvent]) -> list[ev.ClientEvent]:
    return [e for e in events if isinstance(e, types)]


def test_members_move_between_relays_of_a_shared_room_and_nobody_notices() -> None:
    net = SimNetwork(seed=12, default=PathModel(delay=0.005))
    room = memory_shared.SharedRoom(CONFIG.history, seeded(99))
    first, second = relay(room, net.now, 1), relay(room, net.now, 2)
    net.attach(A, first)
    net.attach(B, second)
    alice = member(net, 0, "alice", (A, B))
    bob = member(net, 1, "bob", (B, A))
    carol = member(net, 2, "carol", (A, B))
    dave = member(net, 3, "dave", (A,))  # one relay only: no fail-over
    everyone = (alice, bob, carol, dave)
    net.run(1.0)
    for session in everyone:
        drain(session)
    for i in range(3):
        alice.say(f"a{i}", net.now)
        bob.say(f"b{i}", net.now)
    assert net.run_until(lambda: len(of(carol, ev.MessageReceived)) == 6, 5)
    # A dies with alice's next post on its way: it reached A, A appended it, the POSTED is lost.
    net.set_path(A, client_addr(0), PathModel(loss=1.0))
    seq = room.last_seq
    in_flight = alice.say("in flight", net.now)
    net.run(0.05)
    assert room.last_seq == seq + 1  # posted on A; alice does not know it
    net.detach(A)
    alice.say("after", net.now)
    moved = (alice, carol)
    assert net.run_until(lambda: all(s.server == B for s in moved), 5)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED and s.idle for s in moved), 5)
    net.run(5.0)
    room.lose(first.log.relay_id)  # the room notices A's death (its liveness expired)
    net.run(2.0)
    seen = {s: drain(s) for s in everyone}

    expected = ["a0", "b0", "a1", "b1", "a2", "b2", "in flight", "after"]
    orders = []
    for session in (alice, bob, carol):
        events = seen[session]
        whole = chat(events)
        orders.append(whole)
        assert sorted(text for _, _, text in whole) == sorted(expected), session.nick
        numbers = [seq for seq, _, _ in whole]
        assert numbers == sorted(set(numbers))
        assert not kinds(events, ev.HistoryGap, ev.MessageRefused, ev.MemberJoined)
        assert not kinds(events, ev.MembersJoined)
        left = kinds(events, ev.MemberLeft, ev.MembersLeft)
        names = [
            n for e in left for n in (e.nicks if isinstance(e, ev.MembersLeft) else (e.nick,))
        ]
        assert names == ["dave"]  # the one member that could not move, announced once
    assert orders[0] == orders[1] == orders[2]  # one room order across both relays
    for session in moved:
        assert [(e.relay, e.to) for e in kinds(seen[session], ev.RelayMoved)] == [
            ("10.0.0.1:4000", "10.0.0.2:4000")
        ]
    own = [e for e in kinds(seen[alice], ev.MessageReceived) if e.own]
    assert [e.local_id for e in own].count(in_flight) == 1
    assert sorted(second.sessions.nick_list()) == ["alice", "bob", "carol"]
    assert dave.server == A and not of(dave, ev.RelayMoved)


def test_one_of_three_relays_dies_while_everyone_chats() -> None:
    """Two members on each of three relays, each listing its own relay first, all chatting
    steadily; B dies mid-chat. B's members are back within 3 s on the relay listed next;
    every member sees every message once, in one room order, and nobody leaves or joins."""
    net = SimNetwork(seed=21, default=PathModel(delay=0.003, jitter=0.002))
    room = memory_shared.SharedRoom(CONFIG.history, seeded(98))
    c: Address = ("10.0.0.3", 4000)
    addresses = (A, B, c)
    relays = [relay(room, net.now, 10 + i) for i in range(3)]
    for address, core in zip(addresses, relays, strict=True):
        net.attach(address, core)
    sessions = []
    for i in range(6):
        own = i % 3
        order = (*addresses[own:], *addresses[:own])
        sessions.append(member(net, i, f"m{i}", order))
    net.run(1.0)
    for session in sessions:
        drain(session)
    sent: list[str] = []
    killed_at: float | None = None
    on_b = [s for s in sessions if s.relays[0] == B]
    for tick in range(40):  # 8 s of chat, a message from each member every 0.2 s
        for session in sessions:
            text = f"{session.nick} {tick}"
            session.say(text, net.now)
            sent.append(text)
        net.run(0.2)
        if tick == 15:
            net.detach(B)
            killed_at = net.now
        if tick == 30:  # 3 s after the kill (virtual time): B's members chat through C
            assert killed_at is not None and net.now - killed_at <= 3.0 + 1e-9
            assert all(
                s.server == c and s.state is SessionState.JOINED for s in on_b
            ), [(s.nick, s.server, s.state) for s in on_b]
            room.lose(relays[1].log.relay_id)  # the room notices, later than the members
    assert net.run_until(lambda: all(s.idle for s in sessions), 10)
    net.run(1.0)
    orders = []
    for session in sessions:
        events = drain(session)
        whole = chat(events)
        assert sorted(text for _, _, text in whole) == sorted(sent), session.nick
        orders.append(whole)
        assert not kinds(events, ev.MemberJoined, ev.MembersJoined, ev.MemberLeft, ev.MembersLeft)
        assert not kinds(events, ev.HistoryGap, ev.MessageRefused)
        moved = kinds(events, ev.RelayMoved)
        assert len(moved) == (1 if session in on_b else 0)
    assert all(order == orders[0] for order in orders)  # one room order everywhere


def test_a_move_to_a_farther_relay_measures_the_new_path_afresh() -> None:
    """protocol.md 4: the move's handshake retries on the old 10 ms round trip, so a relay
    400 ms away gets its HELLO and JOIN twice and the new round trip goes unmeasured; the
    new link must then start from the default estimate, not the old relay's 10 ms (which
    would have every packet resent before its ACK, and no sample ever taken)."""
    net = SimNetwork(seed=5, default=PathModel(delay=0.005))
    room = memory_shared.SharedRoom(CONFIG.history, seeded(97))
    first, second = relay(room, net.now, 1), relay(room, net.now, 2)
    net.attach(A, first)
    net.attach(B, second)
    net.set_path(client_addr(0), B, PathModel(delay=0.2))
    net.set_path(B, client_addr(0), PathModel(delay=0.2))
    alice = member(net, 0, "alice", (A, B))
    for i in range(3):
        alice.say(f"near {i}", net.now)
        net.run(0.1)
    assert alice.stats.link.srtt < 0.05
    net.detach(A)
    assert net.run_until(lambda: alice.server == B and alice.state is SessionState.JOINED, 10)
    before = alice.stats.link.retransmissions
    for i in range(5):
        alice.say(f"far {i}", net.now)
        net.run(0.5)
    assert net.run_until(lambda: alice.idle, 10)
    assert alice.stats.link.srtt > 0.3  # measured on the new path
    assert alice.stats.link.retransmissions - before <= 1
