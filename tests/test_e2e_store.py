"""A relay on a SQLite store killed with SIGKILL mid-burst and restarted on the same file:
the room goes on (protocol.md 6.6). Real ``udpchat relay`` subprocesses, library clients."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e_support import RelayProcess, members
from udpchat import events as ev

pytestmark = pytest.mark.e2e

BURST = 60  # messages per member
# A member timeout well above the clients' rejoin backoff while the relay restarts.
TIMERS = ("--heartbeat", "200ms", "--timeout", "15s")
LIMITS = ("--flood-burst", "10000", "--flood-rate", "10000")


def room_row(store: Path) -> tuple[bytes, int]:
    with closing(sqlite3.connect(store)) as db:
        (epoch,) = db.execute("SELECT epoch FROM room").fetchone()
        (last_seq,) = db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    return bytes(epoch), int(last_seq)


def received(count: int) -> Callable[[list[ev.ClientEvent]], bool]:
    return lambda events: sum(isinstance(e, ev.MessageReceived) for e in events) >= count


@pytest.mark.timeout(60)
def test_a_relay_killed_mid_burst_carries_the_room_on(tmp_path: Path) -> None:
    store = tmp_path / "room.sqlite3"
    # The same identity and the same store: the restarted relay is the same relay.
    identity = tmp_path / "relay.key"
    args = ("--store", f"sqlite:{store}", "--identity", str(identity), *TIMERS, *LIMITS)
    relay = RelayProcess(*args)
    second: RelayProcess | None = None
    try:
        relay.wait_line(lambda s: s == f"room store: sqlite:{store}", 5, stderr=True)
        with members(relay.address, "alice", "bob", "carol") as [alice, bob, carol]:
            texts = [f"{nick} {i}" for i in range(BURST) for nick in ("alice", "bob")]
            for i in range(BURST // 2):
                alice.client.say(f"alice {i}")
                bob.client.say(f"bob {i}")
            # Mid-burst: some of it is posted, some in flight, some not sent yet.
            assert carol.log.wait_for(received(10), 10)
            relay.kill()
            epoch, killed_at = room_row(store)  # the file is free once its relay is gone
            assert killed_at < 3 + len(texts)  # 3 JOINED, then part of the burst
            for i in range(BURST // 2, BURST):
                alice.client.say(f"alice {i}")
                bob.client.say(f"bob {i}")
            second = RelayProcess(*args, port=relay.address[1])
            second.wait_line(lambda s: "may resume" in s, 5, stderr=True)
            assert second.address == relay.address
            for member in (alice, bob, carol):
                assert member.log.wait_for(received(len(texts)), 30), member.log.texts()
            assert alice.client.wait_idle(10) and bob.client.wait_idle(10)
            orders = []
            for member in (alice, bob, carol):
                seen = [(e.seq, e.nick, e.text) for e in member.log.chat()]
                assert sorted(t for _, _, t in seen) == sorted(texts), "not every message once"
                seqs = [s for s, _, _ in seen]
                assert seqs == sorted(set(seqs)), "out of order or twice"
                for nick in ("alice", "bob"):  # each sender's messages in the order typed
                    mine = [t for _, n, t in seen if n == nick]
                    assert mine == [f"{nick} {i}" for i in range(BURST)]
                assert not member.log.of(ev.HistoryGap)
                assert not member.log.of(ev.MemberLeft), second.stderr
                assert [e.nick for e in member.log.of(ev.MemberJoined)] == {
                    "alice": ["bob", "carol"],
                    "bob": ["carol"],
                    "carol": [],
                }[member.nick]  # nobody joined again after the restart
                orders.append(seen)
            assert orders[0] == orders[1] == orders[2]  # one room order
            second.wait_line(lambda s: "alice rejoined from" in s, 5, stderr=True)
            second.kill()
            assert room_row(store) == (epoch, orders[0][-1][0])  # the same room, numbers on
    finally:
        relay.cleanup()
        if second is not None:
            second.cleanup()
