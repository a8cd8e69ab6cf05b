"""A relay restarted on the same room log carries the room on (protocol.md 6.6): the sans-I/O
relay and real client sessions on the simulated network, the relay replaced mid-chat by a new
one on the same SQLite file, as after ``kill -9``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.client_support import (
    RELAY,
    RELAY_STATIC,
    TIME,
    client_addr,
    drain,
    of,
    seeded,
)
from udpchat import events as ev
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.sim import PathModel, SimNetwork
from udpchat.stores.sqlite import SqliteRoomLog

pytestmark = pytest.mark.unit

CONFIG = RelayConfig(timeout=5.0, flood_burst=100, flood_rate=100.0)


def relay_on(path: Path, now: float, seed: int, config: RelayConfig = CONFIG) -> RelayCore:
    log = SqliteRoomLog(path, config.history, seeded(seed + 1000))
    return RelayCore(
        config, now, seeded(seed), wall_offset=TIME, static_key=RELAY_STATIC, room_log=log
    )


def crash(relay: RelayCore) -> None:
    """What ``kill -9`` leaves: the file as last committed, and its lock released."""
    assert isinstance(relay.log, SqliteRoomLog)
    relay.log._db.close()


def members(net: SimNetwork, nicks: tuple[str, ...]) -> list[ClientSession]:
    sessions = []
    for i, nick in enumerate(nicks):
        session = ClientSession(
            ClientConfig(nick, RELAY), seeded(100 + i), net.now, wall_offset=TIME
        )
        net.attach(client_addr(i), session)
        session.connect(net.now)
        assert net.run_until(lambda s=session: s.state is SessionState.JOINED, 5)  # type: ignore[misc]
        sessions.append(session)
    return sessions


def chat_seen(events: list[ev.ClientEvent]) -> list[tuple[int, str, str]]:
    return [(e.seq, e.nick, e.text) for e in events if isinstance(e, ev.MessageReceived)]


def test_a_restarted_relay_carries_the_room_on(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    net = SimNetwork(seed=3, default=PathModel(delay=0.005))
    first = relay_on(path, net.now, 1)
    net.attach(RELAY, first)
    alice, bob, carol, dave = members(net, ("alice", "bob", "carol", "dave"))
    for i in range(5):
        alice.say(f"before {i}", net.now)
    assert net.run_until(lambda: len(of(bob, ev.MessageReceived)) == 5, 5)
    before = {s: drain(s) for s in (alice, bob, carol, dave)}
    epoch, seq = first.epoch, first.room_seq
    # Messages in flight at the crash: the relay logs and fans them out, but alice never
    # gets their POSTED.
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    in_flight = [alice.say(f"in flight {i}", net.now) for i in range(3)]
    net.run(0.1)
    assert first.room_seq == seq + 3
    # kill -9: the relay vanishes with whatever it had not committed; dave goes away too.
    net.detach(RELAY)
    crash(first)
    net.detach(client_addr(3))
    net.set_path(RELAY, client_addr(0), PathModel(delay=0.005))
    net.run(0.5)
    second = relay_on(path, net.now, 2)  # another random source: the room is the file's
    net.attach(RELAY, second)
    assert second.epoch == epoch and second.room_seq == seq + 3
    assert second.member_nicks() == []  # nobody back yet; all four still hold their places
    assert set(second.sessions.nick_list()) == {"alice", "bob", "carol", "dave"}
    assert net.run_until(
        lambda: all(s.state is SessionState.JOINED and s.idle for s in (alice, bob, carol)), 10
    )
    after = alice.say("after the restart", net.now)
    net.run(CONFIG.timeout + 1)  # dave does not come back within the member timeout
    seen = {s: drain(s) for s in (alice, bob, carol)}

    for session in (alice, bob, carol):
        events = seen[session]
        assert not of_kind(events, ev.HistoryGap)
        assert not of_kind(events, ev.MemberJoined)  # nobody rejoined as a newcomer
        left = of_kind(events, ev.MemberLeft)
        assert [(e.nick, e.reason) for e in left] == [("dave", "timed out")]  # exactly once
        welcomed = of_kind(events, ev.Welcomed)
        assert len(welcomed) == 1 and welcomed[0].nick == session.nick
    # Every member saw every message once, in one order, the numbers continuing.
    for session in (bob, carol):
        whole = chat_seen(before[session]) + chat_seen(seen[session])
        assert [text for _, _, text in whole] == [
            *(f"before {i}" for i in range(5)),
            *(f"in flight {i}" for i in range(3)),
            "after the restart",
        ]
        numbers = [number for number, _, _ in whole]
        assert numbers == sorted(set(numbers))
    # alice's messages in flight were posted exactly once, each with its first number.
    own = [e for e in of_kind(seen[alice], ev.MessageReceived) if e.own]
    assert sorted(e.local_id for e in own if e.local_id is not None) == sorted([*in_flight, after])
    assert [e.seq for e in own if e.local_id in in_flight] == [seq + 1, seq + 2, seq + 3]
    assert not of_kind(seen[alice], ev.MessageRefused)
    assert second.stats.resent_requests + second.stats.deliveries > 0
    assert second.room_seq == seq + 3 + 2  # "after the restart" and dave's LEFT, nothing else


def test_a_resent_post_is_recognised_by_its_message_id(tmp_path: Path) -> None:
    """Without history to confirm them, alice resends her messages in flight: the restarted
    relay knows their ids from the file and answers them as it did, posting nothing."""
    config = replace(CONFIG, history=0)
    path = tmp_path / "room.sqlite3"
    net = SimNetwork(seed=6, default=PathModel(delay=0.005))
    first = relay_on(path, net.now, 1, config)
    net.attach(RELAY, first)
    alice, bob = members(net, ("alice", "bob"))
    seq = first.room_seq
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    in_flight = [alice.say(f"in flight {i}", net.now) for i in range(3)]
    net.run(0.1)
    assert first.room_seq == seq + 3
    net.detach(RELAY)
    crash(first)
    net.set_path(RELAY, client_addr(0), PathModel(delay=0.005))
    second = relay_on(path, net.now, 2, config)
    net.attach(RELAY, second)
    assert net.run_until(lambda: second.member_nicks() == ["alice", "bob"], 10)
    assert net.run_until(lambda: alice.idle, 10)
    net.run(0.5)
    own = [e for e in of(alice, ev.MessageReceived) if isinstance(e, ev.MessageReceived) and e.own]
    assert [(e.local_id, e.seq) for e in own] == [(in_flight[i], seq + 1 + i) for i in range(3)]
    assert second.stats.resent_requests == 3 and second.room_seq == seq + 3
    texts = [e.text for e in of(bob, ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert texts == [f"in flight {i}" for i in range(3)]


def test_a_member_back_after_its_timeout_is_a_newcomer(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    net = SimNetwork(seed=4, default=PathModel(delay=0.005))
    first = relay_on(path, net.now, 1)
    net.attach(RELAY, first)
    alice, bob = members(net, ("alice", "bob"))
    net.detach(RELAY)
    crash(first)
    net.detach(client_addr(1))  # bob is away longer than the member timeout
    second = relay_on(path, net.now, 2)
    net.attach(RELAY, second)
    assert net.run_until(lambda: alice.state is SessionState.JOINED and alice.idle, 10)
    net.run(CONFIG.timeout + 1)
    left = of_kind(drain(alice), ev.MemberLeft)
    assert [(e.nick, e.reason) for e in left] == [("bob", "timed out")]
    net.attach(client_addr(1), bob)
    assert net.run_until(lambda: second.member_nicks() == ["alice", "bob"], 30)
    net.run(0.5)
    events = drain(alice)
    # The room told alice once that bob timed out, then that he joined anew.
    assert [e.nick for e in of_kind(events, ev.MemberJoined)] == ["bob"]


def test_a_kept_nickname_is_not_for_anyone_else(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    net = SimNetwork(seed=5, default=PathModel(delay=0.005))
    first = relay_on(path, net.now, 1)
    net.attach(RELAY, first)
    members(net, ("alice",))
    net.detach(RELAY)
    crash(first)
    net.detach(client_addr(0))
    second = relay_on(path, net.now, 2)
    net.attach(RELAY, second)
    impostor = ClientSession(
        ClientConfig("alice", RELAY, reconnect=False), seeded(9), net.now, wall_offset=TIME
    )
    net.attach(client_addr(7), impostor)
    impostor.connect(net.now)
    net.run(1.0)
    assert impostor.state is not SessionState.JOINED or impostor.nick != "alice"
    assert second.member_nicks() in ([], ["alice_"])
    # the refusal says why, and for how long (most often it is alice, her client restarted)
    refused = [e for e in drain(impostor) if isinstance(e, ev.JoinRejected)]
    assert len(refused) == 1
    assert refused[0].reason == (
        "the nickname alice is kept for its member, who may come back after the relay's"
        " restart: free in 5 s unless they do"
    )


def of_kind(events: list[ev.ClientEvent], kind: type[ev.ClientEvent]) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]
