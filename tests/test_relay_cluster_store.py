"""Several relays, one room (protocol.md 6.8), when the shared store fails: out of reach
(posts refused, joins rejected, leaves held and bounded), or the room lost (a new epoch)."""

from __future__ import annotations

import pytest

from tests.client_support import client_addr, drain, of
from tests.cluster_support import (
    CONFIG,
    chat,
    cluster,
    left,
)
from udpchat import events as ev
from udpchat import wire
from udpchat.client.states import SessionState
from udpchat.relay import cluster as cluster_module
from udpchat.relay.events import RoomNotice

pytestmark = pytest.mark.unit


def test_a_store_out_of_reach_refuses_posts_and_joins_and_holds_leaves() -> None:
    c = cluster()
    ann, bo, cy = c.join("ann", 0), c.join("bo", 1), c.join("cy", 2)
    ann.say("before", c.net.now)
    c.settle()
    c.room.available = False
    refused_id = ann.say("while away", c.net.now)
    late = c.start("di", 1)
    bo.quit("bye", c.net.now)
    c.net.run(3.0)  # beyond heartbeats: the relays keep serving their members
    refused = [e for e in of(ann, ev.MessageRefused) if isinstance(e, ev.MessageRefused)]
    assert [e.local_id for e in refused] == [refused_id]
    assert "store cannot be reached" in refused[0].reason and "send it again" in refused[0].reason
    rejected = [e for e in of(late, ev.JoinRejected) if isinstance(e, ev.JoinRejected)]
    assert [e.code for e in rejected] == [wire.RejectCode.UNAVAILABLE]
    assert "store cannot be reached" in rejected[0].reason
    assert ann.state is SessionState.JOINED and cy.state is SessionState.JOINED
    assert left(ann) == [] and left(cy) == []  # bo's leave waits for the store
    relay0, relay1 = c.relay_of(0), c.relay_of(1)
    assert relay0.stats.store_refused == 1 and relay1.stats.store_refused == 1
    assert relay1.stats.store_held >= 1
    notices = [e.text for e in relay1.events() if isinstance(e, RoomNotice)]
    assert len(notices) == 1 and "cannot be reached" in notices[0]
    c.room.available = True
    c.net.run(1.0)
    ann.say("after", c.net.now)
    c.settle()
    assert left(ann) == ["bo"] and left(cy) == ["bo"]
    assert chat(ann) == chat(cy) and [t for _, t in chat(cy)] == ["before", "after"]
    assert [e.text for e in relay1.events() if isinstance(e, RoomNotice)] == [
        "the room's store answers again"
    ]
    assert relay0.sessions.nick_list() == ("ann", "cy")


def test_while_the_store_is_away_renames_and_private_messages_elsewhere_are_refused() -> None:
    c = cluster()
    ann, bo = c.join("ann", 0), c.join("bo", 1)
    al = c.join("al", 0)
    c.settle()
    c.room.available = False
    ann.change_nick("anna", c.net.now)
    ann.private("bo", "to another relay", c.net.now)
    ann.private("al", "to my own relay", c.net.now)
    c.net.run(1.0)
    errors = [e.text for e in of(ann, ev.ErrorReported) if isinstance(e, ev.ErrorReported)]
    assert errors == [
        "the room's store cannot be reached: try again in a moment",
        "the room's store cannot be reached; send it again",
    ]
    got = [e.text for e in of(al, ev.PrivateReceived) if isinstance(e, ev.PrivateReceived)]
    assert got == ["to my own relay"]
    assert not of(bo, ev.PrivateReceived) and ann.nick == "ann"
    c.room.available = True
    ann.change_nick("anna", c.net.now)
    c.settle()
    assert all(r.sessions.nick_list() == ("al", "anna", "bo") for r in c.relays)


def test_a_member_that_times_out_while_the_store_is_away_leaves_once_when_it_is_back() -> None:
    c = cluster()
    ann, _, cy = c.join("ann", 0), c.join("bo", 1), c.join("cy", 2)
    c.settle()
    c.room.available = False
    c.net.detach(client_addr(1))  # bo goes silent
    c.net.run(CONFIG.timeout + 1)
    assert c.relay_of(1).member_nicks() == [] and left(ann) == []
    c.room.available = True
    c.net.run(2.0)
    assert left(ann) == ["bo"] and left(cy) == ["bo"]
    assert c.relay_of(0).sessions.nick_list() == ("ann", "cy")
    assert c.join("bo", 2).nick == "bo"  # its nickname is free again


def test_what_is_held_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_module, "MAX_HELD", 4)
    c = cluster()
    ann = c.join("ann", 0)
    quitters = [c.join(nick, 1) for nick in ("bo", "cy", "di")]
    c.settle()
    c.room.available = False
    for member in quitters:  # each leave holds three: its nickname, its session, its LEFT
        member.quit("bye", c.net.now)
    c.net.run(1.0)
    relay = c.relay_of(1)
    assert relay.stats.store_held == 9 and relay.stats.store_lost == 5
    c.room.available = True
    c.net.run(2.0)
    assert left(ann) == ["cy", "di"]  # the oldest held were dropped, and counted


def test_a_store_that_lost_the_room_is_a_new_epoch_for_every_member() -> None:
    c = cluster()
    ann, bo, cy = c.join("ann", 0), c.join("bo", 1), c.join("cy", 2)
    ann.say("old room", c.net.now)
    c.settle()
    old_epoch = c.relay_of(0).epoch
    for member in (ann, bo, cy):
        drain(member)
    c.room.flush()
    back = [["ann"], ["bo"], ["cy"]]
    assert c.net.run_until(lambda: [r.member_nicks() for r in c.relays] == back, 10)
    c.settle()
    assert all(r.epoch == c.room.epoch != old_epoch for r in c.relays)
    assert all(r.stats.epoch_changes == 1 for r in c.relays)
    for member in (ann, bo, cy):
        lost = [e for e in of(member, ev.ConnectionLost) if isinstance(e, ev.ConnectionLost)]
        assert [e.reason for e in lost] == ["the relay lost our session"]
        welcomed = [e for e in of(member, ev.Welcomed) if isinstance(e, ev.Welcomed)]
        assert len(welcomed) == 1 and not welcomed[0].resumed  # a fresh place, a new room
        assert welcomed[0].history_lost  # and the user is told the history is gone
        assert sorted(member.members) == ["ann", "bo", "cy"]
    drain(ann), drain(bo), drain(cy)
    bo.say("new room", c.net.now)
    c.settle()
    assert chat(ann) == chat(cy) == chat(bo) and [t for _, t in chat(ann)] == ["new room"]
    assert c.relay_of(0).room_seq == c.room.last_seq < 10
