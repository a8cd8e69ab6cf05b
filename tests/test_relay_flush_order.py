"""The order in which a relay turn flushes its members, and what survives a cut-short or
failing flush: the just-handled member goes last (its POSTED after the fan-out it confirms),
but never behind the members a sliced flush left waiting, and a fault in one member's flush
costs that member's output only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.fakeclient import FakeClient
from tests.relaysim import RELAY, client_addr, join, setup
from udpchat import messages as m
from udpchat.relay.config import RelayConfig

pytestmark = pytest.mark.unit

BIG = RelayConfig(
    flood_burst=1000,
    flood_rate=1000.0,
    max_members_per_host=1000,
    max_members_per_network=1000,
    handshake_burst=1000,
    handshake_rate=1000.0,
)


def test_a_member_waiting_in_a_sliced_leftover_is_not_pushed_back_by_its_own_datagrams() -> None:
    """Turns cut short (two slices of 64, as when handshakes wait): member B, waiting in the
    leftover, pings every turn; it must still be served, not moved behind everyone again."""
    net, relay = setup(BIG)
    clients = [join(net, f"m{i}", i) for i in range(140)]
    net.run(2.0)
    net.detach(RELAY)
    b_index = 70
    b = clients[b_index]
    now = net.now
    served = False
    for turn in range(12):
        now += 0.002
        talker = clients[turn]
        talker.send(m.Say(f"line {turn}"))
        for data, _ in talker.datagrams_to_send(now):
            relay.receive_datagram(data, client_addr(turn), now)
        assert b.link is not None
        b.link.ping()
        for data, _ in b.datagrams_to_send(now):
            relay.receive_datagram(data, client_addr(b_index), now)
        out = relay.datagrams_to_send(now, 128)
        served = served or any(addr == client_addr(b_index) for _, addr in out)
    assert served


def test_a_fault_flushing_one_member_leaves_the_others_marked() -> None:
    net, relay = setup(RelayConfig(flood_burst=100, flood_rate=100.0))
    alice, _bob, _carol = [join(net, n, i) for i, n in enumerate(("alice", "bob", "carol"))]
    net.run(2.0)
    net.detach(RELAY)
    now = net.now
    alice.send(m.Say("hello"))
    for data, _ in alice.datagrams_to_send(now):
        relay.receive_datagram(data, client_addr(0), now)
    first = next(iter(relay.sessions.dirty))
    flush: Callable[..., None] = relay.paths.flush

    def faulty(member: object, when: float, out: list[tuple[bytes, object]]) -> None:
        if member is first:
            relay.paths.flush = flush  # type: ignore[method-assign]
            raise RuntimeError("a bug in one member's flush")
        flush(member, when, out)

    relay.paths.flush = faulty  # type: ignore[method-assign, assignment]
    with pytest.raises(RuntimeError):
        relay.datagrams_to_send(now)  # the driver reports it and goes on
    # the others' copies (and alice's answer) are still due: the next turn sends them
    assert len(relay.sessions.dirty) == 2
    assert relay.next_timer() is not None and relay.next_timer() <= now  # type: ignore[operator]
    assert len(relay.datagrams_to_send(now)) >= 2


def test_a_newcomer_s_accept_and_welcome_leave_before_the_leaves_it_flushes_fan_out() -> None:
    """A join while a batch of leaves waits (protocol.md 6.3): the batch is logged first
    (WELCOME counts it) but fanned out only at the next output, after the newcomer's ACCEPT
    and WELCOME; the newcomer, whose WELCOME lists the room without them, is not sent it."""
    net, relay = setup(BIG)
    clients = [join(net, f"m{i}", i) for i in range(20)]
    net.run(2.0)
    clients[0].send(m.Quit("bye"))
    net.run(0.01)  # the QUIT is in; its LEFT waits for the batch window
    assert relay.room.notices.kind is not None
    net.detach(RELAY)
    newcomer = FakeClient("late", RELAY, seed=99)
    addr = client_addr(99)
    now = net.now
    for _ in range(2):  # HELLO, then the JOIN that answers the CHALLENGE
        for data, _ in newcomer.datagrams_to_send(now):
            relay.receive_datagram(data, addr, now)
        for data, dest in relay.datagrams_to_send(now):
            assert dest == addr  # nothing for the others yet: the fan-out waits
            newcomer.receive_datagram(data, RELAY, now)
    assert newcomer.joined
    welcome = newcomer.of(m.Welcome)[0]
    assert "m0" not in welcome.members and welcome.seq == relay.room_seq
    later = relay.datagrams_to_send(now)
    others = {client_addr(i) for i in range(1, 20)}
    assert {dest for _, dest in later} == others  # the LEFT_BATCH, to the others only
    net.attach(RELAY, relay)
    net.attach(addr, newcomer)
    for i in range(1, 20):
        net.attach(client_addr(i), clients[i])
    for data, dest in later:
        clients[int(dest[1]) - 40000].receive_datagram(data, RELAY, now)
    net.run(2.0)
    assert not newcomer.of(m.LeftBatch) and not newcomer.of(m.Left)
    assert all(c.of(m.LeftBatch) or c.of(m.Left) for c in clients[1:])


def _join_by_hand_while_a_leave_batch_waits() -> tuple:  # type: ignore[type-arg]
    """20 members, m0 quit (its LEFT waiting for the batch window), then a newcomer joined
    by hand: the relay took the newcomer's ACCEPT and WELCOME, and holds the fan-out."""
    net, relay = setup(BIG)
    clients = [join(net, f"m{i}", i) for i in range(20)]
    net.run(2.0)
    clients[0].send(m.Quit("bye"))
    net.run(0.01)
    net.detach(RELAY)
    newcomer = FakeClient("late", RELAY, seed=99)
    now = net.now
    for _ in range(2):
        for data, _ in newcomer.datagrams_to_send(now):
            relay.receive_datagram(data, client_addr(99), now)
        for data, _ in relay.datagrams_to_send(now):
            newcomer.receive_datagram(data, RELAY, now)
    assert newcomer.joined and relay.room.held
    return relay, clients, now


def _deliver(relay: object, clients: list[FakeClient], now: float) -> None:
    for data, dest in relay.datagrams_to_send(now):  # type: ignore[attr-defined]
        if dest != client_addr(99):
            clients[int(dest[1]) - 40000].receive_datagram(data, RELAY, now)


def test_a_private_does_not_overtake_the_fan_out_held_for_a_newcomer() -> None:
    """What a member says after the newcomer's WELCOME left comes after the held fan-out,
    in the order it was said, a PRIVATE (sent to its one member directly) included."""
    relay, clients, now = _join_by_hand_while_a_leave_batch_waits()
    sender, target = clients[1], clients[2]
    sender.send(m.Say("first"))
    sender.send(m.PrivateSend("m2", "second"))
    for data, _ in sender.datagrams_to_send(now):
        relay.receive_datagram(data, client_addr(1), now)
    _deliver(relay, clients, now)
    watched = (m.LeftBatch, m.Left, m.ChatMessage, m.Private)
    kinds = [type(x) for x in target.received if isinstance(x, watched)]
    assert kinds[-3:] in (
        [m.LeftBatch, m.ChatMessage, m.Private],
        [m.Left, m.ChatMessage, m.Private],
    )


def test_a_shutdown_does_not_overtake_the_fan_out_held_for_a_newcomer() -> None:
    relay, clients, now = _join_by_hand_while_a_leave_batch_waits()
    relay.shutdown("bye", now)
    _deliver(relay, clients, now)
    watched = (m.LeftBatch, m.Left, m.Shutdown)
    kinds = [type(x) for x in clients[1].received if isinstance(x, watched)]
    assert kinds[-2:] in ([m.LeftBatch, m.Shutdown], [m.Left, m.Shutdown])


def test_a_paged_welcome_lists_the_first_page_as_it_is_now() -> None:
    """The first page is measured again only when it changed (protocol.md 6.7): a newcomer
    sorting into it, or a member of it gone, shows in the next WELCOME."""
    net, _ = setup(replace(BIG, member_page=5, notice_window=0.0))
    members = [join(net, f"m{i}", i) for i in range(8)]
    net.run(1.0)

    def first_page(nick: str, i: int) -> tuple[str, ...]:
        client = join(net, nick, i)
        net.run(1.0)
        return tuple(client.of(m.Welcome)[0].members)

    assert first_page("z1", 20) == ("m0", "m1", "m2", "m3", "m4", "z1")
    assert first_page("z2", 21) == ("m0", "m1", "m2", "m3", "m4", "z2")
    assert first_page("a", 22) == ("a", "m0", "m1", "m2", "m3")
    members[1].send(m.Quit("bye"))
    net.run(1.0)
    assert first_page("z3", 23) == ("a", "m0", "m2", "m3", "m4", "z3")
