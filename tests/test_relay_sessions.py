"""The relay's session table: each member's lifecycle, its timers (heartbeat, expiry), and
address changes with path validation (protocol.md 7). Simulated network, virtual clock."""

from __future__ import annotations

import pytest

from tests.fakeclient import FakeClient
from tests.relaysim import RELAY, client_addr, join, setup
from udpchat import messages as m
from udpchat import wire
from udpchat.link import ASAP
from udpchat.link.reorder import ReorderBuffer
from udpchat.link.state import NO_PARTIAL
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.sessions import LIVE, TRANSITIONS, Member, MemberState, MemberStateError
from udpchat.sim import PathModel

pytestmark = pytest.mark.unit


def test_silent_member_times_out_and_everyone_is_told() -> None:
    net, relay = setup(RelayConfig(heartbeat=0.2, timeout=1.0))
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    alice.heartbeat = 0.2
    net.run(0.5)
    net.detach(client_addr(2))  # bob vanishes
    net.run(2.0)
    left = alice.of(m.Left)
    assert [(x.nick, x.reason) for x in left] == [("bob", m.LeaveReason.TIMEOUT)]
    assert relay.member_nicks() == ["alice"]
    assert bob.nick not in relay.member_nicks()


def test_heartbeat_keeps_a_member() -> None:
    net, relay = setup(RelayConfig(heartbeat=0.2, timeout=1.0))
    alice = join(net, "alice", 1)
    alice.heartbeat = 0.2
    net.run(10)
    assert relay.member_nicks() == ["alice"]


def test_idle_members_cost_no_polling() -> None:
    """With 200 idle members the relay's timer heap wakes once per member per timeout."""
    config = RelayConfig(timeout=10.0, handshake_burst=1000, max_members_per_host=1024)
    net, relay = setup(config)
    clients = [join(net, f"m{i}", i) for i in range(200)]
    for c in clients:
        c.heartbeat = 1.0
    net.run(2)
    calls = 0
    original = relay.handle_timer

    def counting(now: float) -> None:
        nonlocal calls
        calls += 1
        original(now)

    relay.handle_timer = counting  # type: ignore[method-assign]
    net.run(10)
    assert len(relay.members) == 200
    # ~200 expiry re-arms in 10 s, not 200 members x every tick
    assert calls < 600
    assert len(relay.sessions.timers) <= 2 * len(relay.members) + 10


def test_a_timer_whose_work_was_done_wakes_nobody() -> None:
    """A fan-out arms each member's retransmission timer; once its ACK came back the timer
    has nothing to do, and the relay is not woken for it (it was, two or three times a
    message)."""
    net, relay = setup(RelayConfig(flood_burst=100, flood_rate=100.0))
    alice, *_ = [join(net, nick, i) for i, nick in enumerate(("alice", "bob", "carol"))]
    net.run(2)
    calls = 0
    original = relay.handle_timer

    def counting(now: float) -> None:
        nonlocal calls
        # the simulator also calls it when output is pending (next_timer ASAP): not a
        # deadline's wake-up
        if relay.next_timer() != ASAP:
            calls += 1
        original(now)

    relay.handle_timer = counting  # type: ignore[method-assign]
    for i in range(20):
        alice.send(m.Say(f"message {i}"))
        net.run(0.05)
    net.run(1.0)
    assert len(alice.of(m.Posted)) == 20
    assert all(mb.link.idle for mb in relay.members.values())  # every copy acknowledged
    assert calls <= 2


def test_address_change_keeps_the_session_and_is_validated() -> None:
    net, relay = setup()
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    net.run(0.2)
    net.move(client_addr(2), client_addr(9))  # NAT rebinding: new source port
    bob.send(m.Say("from my new port"))
    net.run(0.5)
    assert alice.of(m.ChatMessage)[-1].text == "from my new port"
    assert any(isinstance(x, wire.PathChallenge) for x in bob.other)
    member = next(iter(x for x in relay.members.values() if x.nick == "bob"))
    assert member.addr == client_addr(9) and member.state is MemberState.ACTIVE
    alice.send(m.Say("can you hear me?"))
    net.run(0.5)
    assert bob.of(m.ChatMessage)[-1].text == "can you hear me?"
    assert relay.member_nicks() == ["alice", "bob"]


def test_unvalidated_address_gets_at_most_three_times_what_it_sent() -> None:
    net, relay = setup()
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    assert bob.link is not None
    net.run(0.2)
    # Someone replays... no: bob really moves, but his PATH_RESPONSEs are all lost.
    net.move(client_addr(2), client_addr(9))
    net.set_path(client_addr(9), RELAY, PathModel())
    sent_to_new: list[int] = []
    received_from_new: list[int] = []

    def tap(src, dst, data):  # type: ignore[no-untyped-def]
        if dst == client_addr(9):
            sent_to_new.append(len(data))
        if src == client_addr(9):
            received_from_new.append(len(data))

    net.taps.append(tap)
    original = bob.receive_datagram

    def no_path_response(data: bytes, addr, now: float) -> None:  # type: ignore[no-untyped-def]
        datagram = wire.decode_datagram(data)
        if (
            isinstance(datagram, wire.Protected)
            and datagram.kind == wire.DatagramType.PATH_CHALLENGE
        ):
            return
        original(data, addr, now)

    bob.receive_datagram = no_path_response  # type: ignore[method-assign]
    bob.link.ping()
    for i in range(30):
        alice.send(m.Say("x" * 1000 + str(i)))
    net.run(2)
    assert sum(sent_to_new) <= 3 * sum(received_from_new)
    assert relay.stats.amplification_held > 0


# --- the member lifecycle -------------------------------------------------------------------

S = MemberState


def test_the_lifecycle_table() -> None:
    assert {
        S.ACCEPTED: {S.ACTIVE, S.GONE},
        S.ACTIVE: {S.VALIDATING, S.CLOSING, S.GONE},
        S.VALIDATING: {S.ACTIVE, S.VALIDATING, S.CLOSING, S.GONE},
        S.CLOSING: {S.GONE},
        S.GONE: set(),
    } == TRANSITIONS
    assert set(TRANSITIONS) == set(MemberState)
    # every state can be reached from ACCEPTED, and every state ends in GONE
    reached, frontier = {S.ACCEPTED}, [S.ACCEPTED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()] - reached:
            reached.add(nxt)
            frontier.append(nxt)
    assert reached == set(MemberState)
    assert all(S.GONE in TRANSITIONS[state] for state in MemberState if state is not S.GONE)
    assert {S.ACCEPTED, S.ACTIVE, S.VALIDATING} == LIVE


@pytest.mark.parametrize(
    "start, step",
    [(a, b) for a in MemberState for b in MemberState if b not in TRANSITIONS[a]],
)
def test_a_step_the_table_does_not_allow_raises(start: MemberState, step: MemberState) -> None:
    net, relay = setup()
    join(net, "alice", 1)
    (member,) = relay.members.values()
    member.state = start
    with pytest.raises(MemberStateError):
        member.advance(step)
    assert member.state is start


def member_named(relay: RelayCore, nick: str) -> Member:
    return next(mb for mb in relay.members.values() if mb.nick == nick)


def test_a_member_is_accepted_until_first_heard_then_active() -> None:
    net, relay = setup()
    alice = FakeClient("alice", RELAY, seed=1)
    net.attach(client_addr(1), alice)
    assert net.run_until(lambda: bool(relay.members), 1)  # the JOIN is in, ACCEPT on its way
    member = member_named(relay, "alice")
    assert member.state is S.ACCEPTED and member.live and not alice.joined
    assert relay.sessions.by_join == {member.join: member}  # a repeated JOIN: same ACCEPT
    assert net.run_until(lambda: member.state is not S.ACCEPTED, 1)
    assert member.state is S.ACTIVE and member.join is None and relay.sessions.by_join == {}


def test_a_move_validates_and_a_quit_closes_then_forgets() -> None:
    net, relay = setup()
    join(net, "alice", 1)
    bob = join(net, "bob", 2)
    net.run(0.2)
    member = member_named(relay, "bob")
    assert member.state is S.ACTIVE and member.validated
    net.move(client_addr(2), client_addr(9))
    bob.send(m.Say("moved"))
    assert net.run_until(lambda: member.state is S.VALIDATING, 1)
    assert not member.validated and member.addr == client_addr(9)
    assert net.run_until(lambda: member.state is S.ACTIVE, 1)  # the PATH_RESPONSE came
    assert member.validated
    assert bob.link is not None
    bob.send(m.Quit("bye"))
    net.detach(RELAY)  # from here on we drive the relay by hand
    for datagram in bob.link.datagrams_to_send(net.now):
        relay.receive_datagram(datagram, client_addr(9), net.now)
    assert member.state is S.CLOSING and member.token not in relay.members
    assert relay.sessions.closing == [member]  # its last ACK is flushed ...
    out = relay.datagrams_to_send(net.now)
    assert client_addr(9) in [addr for _, addr in out]
    assert member.state is S.GONE and relay.sessions.closing == []  # ... then it is gone


@pytest.mark.parametrize("why", ["timeout", "resume"])
def test_a_timed_out_or_resumed_session_is_gone(why: str) -> None:
    net, relay = setup(RelayConfig(heartbeat=0.2, timeout=1.0))
    join(net, "alice", 1)
    bob = join(net, "bob", 2)
    net.run(0.2)
    member = member_named(relay, "bob")
    net.detach(client_addr(2))
    if why == "timeout":
        net.run(2.0)
    else:
        assert bob.accept is not None
        resume = wire.Resume(relay.epoch, bob.accept.token, 0)
        assert join(net, "bob", 3, resume=resume, resume_secret=bob.resume_secret).joined
    assert member.state is S.GONE and not member.live
    assert member.token not in relay.members and relay.sessions.by_nick.get("bob") is not member


def test_the_sorted_nickname_list_follows_joins_renames_quits_and_timeouts() -> None:
    """The table keeps every nickname sorted as members come and go (WELCOME's page and
    WHO_PAGE read it), instead of sorting the room again at each join."""
    net, relay = setup(RelayConfig(heartbeat=0.2, timeout=1.0))
    clients = [join(net, nick, i) for i, nick in enumerate(("dan", "ann", "eve", "bob", "cy"))]
    for c in clients:
        c.heartbeat = 0.2
    net.run(0.5)
    assert relay.sessions.sorted_nicks() == ("ann", "bob", "cy", "dan", "eve")
    clients[0].send(m.NickRequest("zed"))  # dan renames himself
    clients[2].send(m.Quit("bye"))  # eve quits
    net.run(0.5)
    assert relay.sessions.sorted_nicks() == ("ann", "bob", "cy", "zed")
    net.detach(client_addr(4))  # cy vanishes and times out
    net.run(2.0)
    assert relay.sessions.sorted_nicks() == ("ann", "bob", "zed")
    assert list(relay.sessions.sorted_nicks()) == relay.member_nicks()
    late = join(net, "al", 7)
    late.heartbeat = 0.2
    net.run(0.5)
    assert relay.sessions.sorted_nicks() == ("al", "ann", "bob", "zed")


def test_an_idle_member_keeps_nothing_its_join_or_a_split_message_needed() -> None:
    """What an idle member costs the relay is what it holds for good: once the handshake is
    over the ACCEPT kept for a repeated JOIN goes, a nickname that is its own key is one
    string, and the link holds no reassembly buffer, no store of early packets and no list
    of key phases until it needs one."""
    net, relay = setup(RelayConfig())
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    net.run(0.5)
    big = "x" * 3000  # several packets: reassembled by the relay, then by alice
    bob.send(m.Say(big))
    net.run(0.5)
    assert [x.text for x in alice.of(m.ChatMessage)] == [big]
    members = {member.nick: member for member in relay.sessions.members.values()}
    assert set(members) == {"alice", "bob"}
    assert members["bob"].link.stats.messages_delivered >= 1
    for member in members.values():
        assert member.state is MemberState.ACTIVE
        assert member.accept == b""
        assert member.key is member.nick
        link = member.link
        assert link._partial is NO_PARTIAL
        assert link._buffer.cost() == 0 and link._buffer._store is ReorderBuffer(0)._store
        assert link._cipher.sending._keys is None and link._cipher.receiving._keys is None
