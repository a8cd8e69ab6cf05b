"""Client fail-over (protocol.md 6.9) on the virtual clock: the session holds the room's relays,
decides when to move and to which, and resumes its place on the relay it moves to.

The moves that matter are tested against real relay cores: a warm standby on the same SQLite
file (relay A killed, relay B started on A's file and key at another address), a standby that
comes up late, a relay that shuts down. The rules of the move itself (round-robin, no move on
a RESET, a refused key left out, the first join) are tested with the real relay core too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.client_support import RELAY, RELAY_STATIC, TIME, client_addr, drain, of, seeded
from udpchat import events as ev
from udpchat.client.config import ClientConfig
from udpchat.client.relays import RelayRing, relay_label
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.noise import public_key
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.sim import PathModel, SimNetwork
from udpchat.stores.sqlite import SqliteRoomLog

pytestmark = pytest.mark.unit

STANDBY: Address = ("10.0.0.2", 4000)
THIRD: Address = ("10.0.0.3", 4000)
CONFIG = RelayConfig(timeout=10.0, flood_burst=100, flood_rate=100.0)
Events = list[ev.ClientEvent]


def relay_on(path: Path, now: float, seed: int, static: bytes = RELAY_STATIC) -> RelayCore:
    log = SqliteRoomLog(path, CONFIG.history, seeded(seed + 1000))
    return RelayCore(CONFIG, now, seeded(seed), wall_offset=TIME, static_key=static, room_log=log)


def memory_relay(now: float, seed: int, static: bytes = RELAY_STATIC) -> RelayCore:
    return RelayCore(CONFIG, now, seeded(seed), wall_offset=TIME, static_key=static)


def kill(net: SimNetwork, address: Address, relay: RelayCore) -> None:
    """``kill -9``: the relay vanishes; its file stays as last committed, lock released."""
    net.detach(address)
    if isinstance(relay.log, SqliteRoomLog):
        relay.log._db.close()


def member(
    net: SimNetwork, i: int, nick: str, relays: tuple[Address, ...] = (RELAY, STANDBY), **kw: object
) -> ClientSession:
    config = ClientConfig(nick, relays[0], fallbacks=relays[1:], **kw)  # type: ignore[arg-type]
    session = ClientSession(config, seeded(100 + i), net.now, wall_offset=TIME)
    net.attach(client_addr(i), session)
    session.connect(net.now)
    return session


def joined(net: SimNetwork, *sessions: ClientSession, timeout: float = 10) -> bool:
    return net.run_until(
        lambda: all(s.state is SessionState.JOINED and s.idle for s in sessions), timeout
    )


def kind(events: Events, of_type: type[ev.ClientEvent]) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, of_type)]


def chat(events: Events) -> list[tuple[int, str, str]]:
    return [(e.seq, e.nick, e.text) for e in kind(events, ev.MessageReceived)]


# --- the ring -----------------------------------------------------------------------------------


def test_the_ring_goes_round_in_the_given_order_and_skips_refused_relays() -> None:
    ring = RelayRing(RELAY, (STANDBY, THIRD))
    assert ring.current == RELAY and ring.many
    assert [ring.advance() for _ in range(4)] == [STANDBY, THIRD, RELAY, STANDBY]
    assert ring.refuse_current() and ring.usable == 2
    assert [ring.advance() for _ in range(3)] == [THIRD, RELAY, THIRD]
    assert ring.refuse_current() and not ring.many
    assert ring.advance() == RELAY and ring.advance() == RELAY
    assert not ring.refuse_current()
    assert relay_label(("::1", 9000)) == "[::1]:9000" and relay_label(RELAY) == "10.0.0.1:4000"


def test_a_relay_listed_twice_is_a_bad_config() -> None:
    with pytest.raises(ValueError, match="twice"):
        ClientConfig("alice", RELAY, fallbacks=(STANDBY, RELAY))


# --- the warm standby -------------------------------------------------------------------------


def test_members_move_to_a_warm_standby_and_resume_there(tmp_path: Path) -> None:
    """Relay A dies (kill -9) mid-chat with posts in flight; relay B starts on A's file and
    key at another address. Every member moves to B within 3 s and resumes: one line each,
    no gap, nothing twice, the post in flight posted once, nobody seen leaving or joining."""
    path = tmp_path / "room.sqlite3"
    net = SimNetwork(seed=3, default=PathModel(delay=0.005))
    first = relay_on(path, net.now, 1)
    net.attach(RELAY, first)
    alice, bob, carol = (member(net, i, nick) for i, nick in enumerate(("alice", "bob", "carol")))
    assert joined(net, alice, bob, carol)
    for i in range(5):
        bob.say(f"before {i}", net.now)
    assert net.run_until(lambda: len(of(carol, ev.MessageReceived)) == 5, 5)
    before = {s: drain(s) for s in (alice, bob, carol)}
    seq = first.room_seq
    # alice's posts reach A and are fanned out, but A dies before her POSTED gets to her.
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    in_flight = [alice.say(f"in flight {i}", net.now) for i in range(2)]
    net.run(0.05)
    assert first.room_seq == seq + 2
    killed_at = net.now
    kill(net, RELAY, first)
    unsent = alice.say("typed while A is dead", net.now)  # never reached any relay
    net.run(0.3)
    second = relay_on(path, net.now, 2)  # the standby: same file, same key, another address
    net.attach(STANDBY, second)
    everyone = (alice, bob, carol)
    assert net.run_until(
        lambda: all(s.server == STANDBY and s.state is SessionState.JOINED for s in everyone), 5
    )
    assert net.now - killed_at < 2.5  # 2 s of silence, then straight to B (protocol.md 6.9)
    assert joined(net, alice, bob, carol)
    net.run(1.0)
    seen = {s: drain(s) for s in (alice, bob, carol)}

    for session in (alice, bob, carol):
        events = seen[session]
        assert kind(events, ev.RelayMoved) == [
            ev.RelayMoved("10.0.0.1:4000", "10.0.0.2:4000", "the relay went silent", 1, 0.0)
        ]
        assert not kind(events, ev.ConnectionLost) and not kind(events, ev.Reconnecting)
        assert not kind(events, ev.HistoryGap)
        assert not kind(events, ev.MemberJoined) and not kind(events, ev.MemberLeft)
        assert not kind(events, ev.MembersJoined) and not kind(events, ev.MembersLeft)
        assert not kind(events, ev.MessageRefused)
        welcomed = kind(events, ev.Welcomed)
        assert len(welcomed) == 1 and welcomed[0].nick == session.nick
        assert session.stats.moves == 1
    expected = [f"before {i}" for i in range(5)] + ["in flight 0", "in flight 1"]
    for session in (bob, carol):
        whole = chat(before[session]) + chat(seen[session])
        texts = [text for _, _, text in whole if text != "typed while A is dead"]
        assert texts == expected
        numbers = [number for number, _, _ in whole]
        assert numbers == sorted(set(numbers))  # one order, nothing twice
        assert [t for _, _, t in whole].count("typed while A is dead") == 1
    own = [e for e in kind(seen[alice], ev.MessageReceived) if e.own]
    first_numbers = [(in_flight[0], seq + 1), (in_flight[1], seq + 2)]
    assert [(e.local_id, e.seq) for e in own[:2]] == first_numbers
    assert [e.local_id for e in own] == [*in_flight, unsent]
    assert second.room_seq == seq + 3  # the unsent line; no leave, no join
    assert set(second.member_nicks()) == {"alice", "bob", "carol"}


def test_a_standby_that_comes_up_late_is_found_round_robin(tmp_path: Path) -> None:
    """B is not up when A dies: the client tries B, gets no answer within the fail-over wait,
    tries A again, then B again (with the rejoin backoff), and resumes once B is up."""
    path = tmp_path / "room.sqlite3"
    net = SimNetwork(seed=4, default=PathModel(delay=0.005))
    first = relay_on(path, net.now, 1)
    net.attach(RELAY, first)
    alice, bob = member(net, 0, "alice"), member(net, 1, "bob")
    assert joined(net, alice, bob)
    drain(alice), drain(bob)
    kill(net, RELAY, first)
    net.run(7.0)  # silence (2 s), straight to B, B for 3 s, a wait (0.5 s): back at A
    moved = kind(drain(alice), ev.RelayMoved)
    assert [(e.relay, e.to, e.attempt, e.delay) for e in moved] == [
        ("10.0.0.1:4000", "10.0.0.2:4000", 1, 0.0),  # B has not been asked yet: at once
        ("10.0.0.2:4000", "10.0.0.1:4000", 2, 0.5),  # then the rejoin backoff (7.1)
    ]
    assert moved[1].reason == "it did not answer"
    second = relay_on(path, net.now, 2)
    net.attach(STANDBY, second)
    assert net.run_until(lambda: alice.server == STANDBY and bob.server == STANDBY, 20)
    assert joined(net, alice, bob)
    alice.say("found you", net.now)
    assert net.run_until(lambda: bool(of(bob, ev.MessageReceived)), 5)
    events = drain(bob)
    assert not kind(events, ev.MemberLeft) and not kind(events, ev.MemberJoined)
    assert [e.text for e in kind(events, ev.MessageReceived)] == ["found you"]


def test_a_relay_that_shuts_down_is_left_for_the_next() -> None:
    """SHUTDOWN: the relay is going away, so the member moves (here to a relay of another room:
    the resume is not honoured, and the client says it joined anew, no place kept)."""
    net = SimNetwork(seed=5, default=PathModel(delay=0.005))
    first = memory_relay(net.now, 1)
    net.attach(RELAY, first)
    net.attach(STANDBY, memory_relay(net.now, 2, static=bytes(range(1, 33))))
    alice = member(net, 0, "alice")
    assert joined(net, alice)
    drain(alice)
    first.shutdown("maintenance", net.now)
    assert net.run_until(lambda: alice.server == STANDBY and alice.state is SessionState.JOINED, 5)
    events = drain(alice)
    moved = kind(events, ev.RelayMoved)
    assert [(e.relay, e.to, e.reason) for e in moved] == [
        ("10.0.0.1:4000", "10.0.0.2:4000", "the relay is shutting down: maintenance")
    ]
    # another room: a new epoch, whose history is not the one alice followed
    assert kind(events, ev.Welcomed) == [ev.Welcomed("alice", ("alice",), False, True)]


def test_a_reset_rejoins_the_same_relay() -> None:
    """A RESET proves the relay at that address is alive and only lost our session (a
    restart without its store): the client rejoins it at once and does not move."""
    net = SimNetwork(seed=6, default=PathModel(delay=0.005))
    net.attach(RELAY, memory_relay(net.now, 1))
    net.attach(STANDBY, memory_relay(net.now, 2))
    alice = member(net, 0, "alice")
    assert joined(net, alice)
    net.detach(RELAY)
    net.attach(RELAY, memory_relay(net.now, 3))  # restarted at once, same key, room lost
    alice.say("after the restart", net.now)
    assert net.run_until(lambda: alice.stats.reconnects == 1 and alice.idle, 5)
    assert alice.server == RELAY and alice.stats.moves == 0
    assert not of(alice, ev.RelayMoved) and of(alice, ev.ConnectionLost)


# --- the first join ---------------------------------------------------------------------------


def test_the_first_join_tries_the_next_relay_when_the_first_does_not_answer() -> None:
    net = SimNetwork(seed=7, default=PathModel(delay=0.005))
    net.attach(STANDBY, memory_relay(net.now, 1))
    alice = member(net, 0, "alice")  # nothing at RELAY
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 10)
    assert alice.server == STANDBY
    assert 3.0 <= net.now < 3.1  # the fail-over wait for a CHALLENGE, then one round trip
    assert not of(alice, ev.RelayMoved)  # nothing to move from: the join just goes on


def test_the_first_join_ends_when_no_relay_of_the_list_answers() -> None:
    net = SimNetwork(seed=8, default=PathModel(delay=0.005))
    alice = member(net, 0, "alice")
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 20)
    assert 10.0 <= net.now < 10.1  # the join timeout, over all the relays
    assert drain(alice)[-1] == ev.Closed(
        "no relay of the list answers (check the addresses and ports)"
    )


def test_refusals_by_the_system_move_the_first_join_on_and_end_it_when_all_refuse() -> None:
    net = SimNetwork(seed=9, default=PathModel(delay=0.005))
    net.attach(STANDBY, memory_relay(net.now, 1))
    alice = member(net, 0, "alice", relays=(RELAY, THIRD, STANDBY))
    assert not alice.unreachable("nothing at A", net.now)  # ICMP from A: on to THIRD
    assert alice.server == THIRD
    assert not alice.unreachable("nothing at C", net.now)  # and from THIRD: on to STANDBY
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 2)
    assert alice.server == STANDBY
    bob = member(net, 1, "bob", relays=(RELAY, THIRD))
    assert not bob.unreachable("nothing at A", net.now)
    assert bob.unreachable("nothing at A or C", net.now)
    assert drain(bob)[-1] == ev.Closed("nothing at A or C")


def full_relay(net: SimNetwork, address: Address, seed: int) -> RelayCore:
    """A relay of one member, who is in: the next JOIN gets RELAY_FULL."""
    relay = RelayCore(replace(CONFIG, max_members=1), net.now, seeded(seed), wall_offset=TIME)
    net.attach(address, relay)
    member(net, 9, "zed", relays=(address,))
    assert net.run_until(lambda: relay.member_nicks() == ["zed"], 5)
    return relay


def test_the_first_join_refused_for_want_of_room_tries_the_next_relay() -> None:
    net = SimNetwork(seed=12, default=PathModel(delay=0.005))
    full_relay(net, RELAY, 1)
    net.attach(STANDBY, memory_relay(net.now, 2))
    alice = member(net, 0, "alice")
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 5)
    assert alice.server == STANDBY
    moved = of(alice, ev.RelayMoved)
    assert len(moved) == 1 and isinstance(moved[0], ev.RelayMoved)
    assert (moved[0].relay, moved[0].to) == ("10.0.0.1:4000", "10.0.0.2:4000")
    assert "full" in moved[0].reason and not of(alice, ev.JoinRejected)


def test_the_first_join_ends_when_every_relay_refuses_and_says_why() -> None:
    net = SimNetwork(seed=13, default=PathModel(delay=0.005))
    full_relay(net, RELAY, 1)
    alice = member(net, 0, "alice", relays=(RELAY, THIRD))  # nothing at THIRD
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 20)
    closed = drain(alice)[-1]
    assert isinstance(closed, ev.Closed)
    assert closed.reason.startswith("no relay of the list let us in; the last one said: ")
    assert "full" in closed.reason


def test_a_nickname_taken_is_the_rooms_answer_on_the_first_join() -> None:
    net = SimNetwork(seed=14, default=PathModel(delay=0.005))
    net.attach(RELAY, memory_relay(net.now, 1))
    net.attach(STANDBY, memory_relay(net.now, 2))
    assert joined(net, member(net, 0, "alice"))
    other = member(net, 1, "ALICE")
    assert net.run_until(lambda: other.state is SessionState.CLOSED, 5)
    events = drain(other)
    assert other.server == RELAY and not kind(events, ev.RelayMoved)
    assert kind(events, ev.JoinRejected)[0].code == 1  # NICK_TAKEN


# --- trust ------------------------------------------------------------------------------------


def test_a_relay_whose_key_is_refused_is_left_out_and_the_others_used() -> None:
    """Each relay of the list is checked on its own: the one whose key is refused is
    reported and never tried again; the session joins the others."""
    impostor_static = bytes(range(1, 33))
    net = SimNetwork(seed=10, default=PathModel(delay=0.005))
    net.attach(RELAY, memory_relay(net.now, 1, static=impostor_static))
    net.attach(STANDBY, memory_relay(net.now, 2))
    good = public_key(RELAY_STATIC)
    asked: list[Address] = []

    def trust_for(address: Address):  # type: ignore[no-untyped-def]
        def check(key: bytes) -> str | None:
            asked.append(address)
            return None if key == good else f"REFUSED: {relay_label(address)} changed its key"

        return check

    config = ClientConfig("alice", RELAY, fallbacks=(STANDBY,))
    alice = ClientSession(config, seeded(1), net.now, wall_offset=TIME, trust_for=trust_for)
    net.attach(client_addr(0), alice)
    alice.connect(net.now)
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 5)
    assert alice.server == STANDBY and asked == [RELAY, STANDBY]
    refusal = ev.ErrorReported("REFUSED: 10.0.0.1:4000 changed its key")
    assert of(alice, ev.ErrorReported) == [refusal]
    # Losing STANDBY, there is nowhere else to go: the session stays with it, rejoining.
    net.detach(STANDBY)
    net.run(30)
    assert alice.server == STANDBY and RELAY not in asked[2:]


def test_a_single_relay_whose_key_is_refused_ends_the_join() -> None:
    net = SimNetwork(seed=11, default=PathModel(delay=0.005))
    net.attach(RELAY, memory_relay(net.now, 1))
    config = ClientConfig("alice", RELAY)
    alice = ClientSession(config, seeded(1), net.now, trust=lambda key: "REFUSED: no")
    net.attach(client_addr(0), alice)
    alice.connect(net.now)
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 5)
    assert drain(alice) == [ev.Closed("REFUSED: no")]
