"""The client session against the real relay core on a simulated network: membership, chat
under loss, relay restarts, catch-up and exactly-once resume."""

from __future__ import annotations

import pytest

from tests.client_support import (
    RELAY,
    RELAY_STATIC,
    TIME,
    chat_log,
    client_addr,
    drain,
    join_all,
    of,
    relay_net,
    seeded,
)
from udpchat import events as ev
from udpchat import wire
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.link import LinkConfig
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.paths import ACCEPT_RESENDS
from udpchat.sim import PathModel

pytestmark = pytest.mark.unit


def test_e2e_join_and_members() -> None:
    net, relay, nodes = relay_net(("alice", "bob", "carol"))
    join_all(net, nodes)
    net.run(0.5)
    for node in nodes:
        assert node.members == ("alice", "bob", "carol")
    assert relay.member_nicks() == ["alice", "bob", "carol"]
    joined = [e.nick for e in of(nodes[0], ev.MemberJoined) if isinstance(e, ev.MemberJoined)]
    assert joined == ["bob", "carol"]
    assert all(not of(node, ev.HistoryGap) for node in nodes)


def test_e2e_three_members_chat_at_20_percent_loss() -> None:
    lossy = PathModel(loss=0.2, delay=0.01, jitter=0.005, reorder=0.05)
    net, _relay, nodes = relay_net(("alice", "bob", "carol"), lossy, seed=3)
    join_all(net, nodes, timeout=30)
    for round_ in range(8):
        for node in nodes:
            node.say(f"{node.nick} {round_}", net.now)
        net.run(0.05)
    assert net.run_until(lambda: all(n.idle for n in nodes), 120)
    net.run(2)  # the last fan-out settles
    logs = [chat_log(node) for node in nodes]
    assert len(logs[0]) == 24
    assert logs[0] == logs[1] == logs[2]  # one order for everyone
    assert [seq for seq, _, _ in logs[0]] == sorted(seq for seq, _, _ in logs[0])
    for node in nodes:
        own = [
            e for e in of(node, ev.MessageReceived) if isinstance(e, ev.MessageReceived) and e.own
        ]
        assert [e.local_id for e in own] == list(range(1, 9))
        assert not of(node, ev.MessageRefused)
        assert not of(node, ev.HistoryGap)
    assert sum(n.stats.retransmissions for n in nodes) > 0
    assert net.stats.dropped > 0


def test_e2e_relay_restart_resets_sessions_and_members_rejoin() -> None:
    net, _relay, (alice, bob) = relay_net(("alice", "bob"))
    join_all(net, [alice, bob])
    alice.say("before", net.now)
    assert net.run_until(lambda: alice.idle, 2)
    net.detach(RELAY)
    restarted = RelayCore(
        RelayConfig(), net.now, seeded(77), wall_offset=TIME, static_key=RELAY_STATIC
    )
    net.attach(RELAY, restarted)
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 3)
    assert of(alice, ev.ConnectionLost) == [ev.ConnectionLost("the relay lost our session")]
    assert of(alice, ev.Reconnecting) == [ev.Reconnecting(1, 0.0)]
    assert net.run_until(lambda: all(n.state is SessionState.JOINED for n in (alice, bob)), 5)
    welcomed = of(alice, ev.Welcomed)[-1]
    assert isinstance(welcomed, ev.Welcomed) and not welcomed.resumed
    bob.say("after", net.now)
    assert net.run_until(lambda: bool(chat_log(alice)[1:]), 3)
    assert chat_log(alice)[-1][1:] == ("bob", "after")
    assert restarted.member_nicks() == ["alice", "bob"]
    assert alice.members == bob.members == ("alice", "bob")


def test_e2e_relay_forgets_an_unreachable_member_who_comes_back() -> None:
    """The relay times a member out while only the way back works; the member's next
    datagram draws a RESET and it rejoins at once, catching up on what it missed."""
    relay_config = RelayConfig(timeout=3.0)
    net, relay, (alice, bob) = relay_net(("alice", "bob"), relay_config=relay_config)
    join_all(net, [alice, bob])
    up = (client_addr(0), RELAY)
    net.set_path(*up, PathModel(loss=1.0))
    assert net.run_until(lambda: relay.member_nicks() == ["bob"], 10)
    bob.say("did alice leave?", net.now)
    net.set_path(*up, PathModel(delay=0.005))
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    assert of(alice, ev.ConnectionLost)[0] == ev.ConnectionLost("the relay lost our session")
    assert net.run_until(lambda: alice.idle and relay.member_nicks() == ["alice", "bob"], 5)
    welcomed = ev.Welcomed("alice", ("alice", "bob"), resumed=False, head=4)
    assert of(alice, ev.Welcomed)[-1] == welcomed
    texts = [e.text for e in of(alice, ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert "did alice leave?" in texts
    left = [e for e in of(bob, ev.MemberLeft) if isinstance(e, ev.MemberLeft)]
    assert [(e.nick, e.reason) for e in left] == [("alice", "timed out")]


def test_e2e_catch_up_after_an_outage_keeps_the_place_and_the_messages() -> None:
    net, _relay, (alice, bob, carol) = relay_net(("alice", "bob", "carol"))
    join_all(net, [alice, bob, carol])
    net.run(0.5)
    drain(alice)
    cut = PathModel(loss=1.0)
    net.set_path(client_addr(0), RELAY, cut)
    net.set_path(RELAY, client_addr(0), cut)
    for i in range(5):
        bob.say(f"missed {i}", net.now)
        net.run(0.2)
    typed = [alice.say(f"typed in the dark {i}", net.now) for i in range(2)]
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    net.run(1.0)
    net.set_path(client_addr(0), RELAY, PathModel(delay=0.005))
    net.set_path(RELAY, client_addr(0), PathModel(delay=0.005))
    assert net.run_until(lambda: alice.idle, 20)
    net.run(0.5)
    welcomed = ev.Welcomed("alice", ("alice", "bob", "carol"), True, head=8)
    assert of(alice, ev.Welcomed)[-1] == welcomed
    history = [
        e.text
        for e in of(alice, ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and e.history
    ]
    assert history == [f"missed {i}" for i in range(5)]
    assert not of(alice, ev.HistoryGap)
    own = [
        e.local_id
        for e in of(alice, ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and e.own
    ]
    assert own == typed
    for other in (bob, carol):
        texts = [t for _, _, t in chat_log(other)]
        assert texts[-2:] == ["typed in the dark 0", "typed in the dark 1"]
        assert not of(other, ev.MemberLeft)  # a resume is not a leave
    assert alice.stats.reconnects == 1


def test_e2e_resume_does_not_repeat_what_the_relay_received() -> None:
    net, _relay, (alice, bob) = relay_net(("alice", "bob"))
    join_all(net, [alice, bob])
    down = (RELAY, client_addr(0))
    net.set_path(*down, PathModel(loss=1.0))
    ids = [alice.say(f"answer lost {i}", net.now) for i in range(3)]
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    net.set_path(*down, PathModel(delay=0.005))
    assert net.run_until(lambda: alice.idle, 20)
    net.run(0.5)
    texts = [t for _, _, t in chat_log(bob)]
    assert texts == [f"answer lost {i}" for i in range(3)]  # each exactly once
    confirmed = [
        e.local_id
        for e in of(alice, ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and e.own
    ]
    assert confirmed == ids
    assert alice.pending == 0


def test_e2e_shutdown_is_acknowledged_then_the_member_rejoins() -> None:
    net, relay, (alice,) = relay_net(("alice",))
    join_all(net, [alice])
    relay.shutdown("maintenance", net.now)
    assert net.run_until(lambda: relay.closed, 0.5)
    assert of(alice, ev.ConnectionLost) == [
        ev.ConnectionLost("the relay is shutting down: maintenance")
    ]
    net.detach(RELAY)
    net.attach(RELAY, RelayCore(RelayConfig(), net.now, seeded(8), wall_offset=TIME))
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 5)


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
    ids = [alice.say(f"posted blind {i}", net.now) for i in range(3)]
    net.run(0.3)
    net.set_path(*up, PathModel(loss=1.0))
    assert net.run_until(lambda: relay.member_nicks() == ["bob"], 10)
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    net.set_default(PathModel(delay=0.005))
    assert net.run_until(lambda: alice.idle, 20)
    net.run(0.5)
    assert [t for _, _, t in chat_log(bob)] == [f"posted blind {i}" for i in range(3)]
    if not history:
        assert relay.stats.resent_requests == 3
    confirmed = [
        e.local_id
        for e in of(alice, ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and e.own
    ]
    assert confirmed == ids
    assert alice.nick == "alice"


def test_e2e_a_rejoin_whose_accept_was_lost_keeps_the_nickname() -> None:
    """An attempt whose ACCEPTs were all lost left a session holding our nickname on the
    relay; the next attempt reuses the nonce and is given that session instead of a REJECT."""
    patient = RelayConfig(timeout=60.0, link=LinkConfig(max_retransmissions=200))
    net, relay, (alice,) = relay_net(("alice",), relay_config=patient)
    join_all(net, [alice])
    net.detach(RELAY)
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    net.attach(RELAY, relay)
    lost_accepts: list[bytes] = []
    original = net.send

    def drop_accepts(src: Address, dst: Address, data: bytes) -> None:
        if src == RELAY and wire.datagram_type(data) == wire.DatagramType.ACCEPT and net.now < 20:
            lost_accepts.append(data)
            return
        original(src, dst, data)

    net.send = drop_accepts  # type: ignore[method-assign]
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 40)
    assert lost_accepts
    assert alice.nick == "alice"
    assert not of(alice, ev.ErrorReported)
    assert relay.member_nicks() == ["alice"]


def test_a_lost_accept_goes_again_with_the_welcome_the_relay_resends() -> None:
    """protocol.md 4: until the relay hears from a new session, each retransmission of its
    first data (WELCOME) is preceded by the ACCEPT again, so that a lost ACCEPT costs the
    relay's RTO (tens of ms on this path), not the client's JOIN retry (250 ms)."""
    net, _relay, (alice,) = relay_net(("alice",))
    accepts: list[float] = []
    joins: list[float] = []
    original = net.send

    def drop_first_accept(src: Address, dst: Address, data: bytes) -> None:
        kind = wire.datagram_type(data)
        if src == RELAY and kind == wire.DatagramType.ACCEPT:
            accepts.append(net.now)
            if len(accepts) == 1:
                return
        if dst == RELAY and kind == wire.DatagramType.JOIN:
            joins.append(net.now)
        original(src, dst, data)

    net.send = drop_first_accept  # type: ignore[method-assign]
    alice.connect(net.now)
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 5)
    assert len(joins) == 1  # the JOIN's retry (250 ms) was never due
    assert len(accepts) == 2 and accepts[1] - accepts[0] < 0.1
    assert net.now < 0.15
    net.run(2.0)
    assert len(accepts) == 2  # heard from: retransmissions go without it


def test_a_retransmission_to_a_member_heard_from_carries_no_accept() -> None:
    net, relay, (alice, bob) = relay_net(("alice", "bob"))
    join_all(net, [alice, bob])
    net.run(0.5)
    sent: list[int] = []
    net.taps.append(lambda src, dst, data: sent.append(wire.datagram_type(data)))
    net.set_path(RELAY, client_addr(1), PathModel(loss=1.0))
    alice.say("lost on its way to bob", net.now)
    net.run(0.3)
    net.set_path(RELAY, client_addr(1), PathModel(delay=0.005))
    assert net.run_until(lambda: bool(chat_log(bob)), 5)
    assert relay.sessions.by_nick["bob"].link.stats.retransmissions > 0
    assert wire.DatagramType.ACCEPT not in sent


def test_a_newcomer_never_heard_from_gets_at_most_three_more_accepts() -> None:
    """A client that vanished after its JOIN: the relay resends its ACCEPT with the first
    ACCEPT_RESENDS retransmitting flushes only, however long it keeps the session and
    however busy the room (every flush to it then retransmits)."""
    net, relay, (alice, bob) = relay_net(("alice", "bob"))
    join_all(net, [alice])
    accepts: list[float] = []
    original = net.send

    def bob_vanishes_after_his_join(src: Address, dst: Address, data: bytes) -> None:
        kind = wire.datagram_type(data)
        if src == RELAY and kind == wire.DatagramType.ACCEPT:
            accepts.append(net.now)
        if src == client_addr(1) and kind == wire.DatagramType.JOIN:
            net.detach(client_addr(1))  # this JOIN is his last word
        original(src, dst, data)

    net.send = bob_vanishes_after_his_join  # type: ignore[method-assign]
    bob.connect(net.now)
    assert net.run_until(lambda: "bob" in relay.member_nicks(), 5)
    for i in range(40):
        alice.say(f"line {i}", net.now)
        net.run(0.1)
    assert "bob" in relay.member_nicks()  # still kept: his timeout has not passed
    assert len(accepts) == 1 + ACCEPT_RESENDS
