"""The room's history is set apart from what happens now: "end of history" is said as soon
as catch-up reaches the room's head at the welcome (in a quiet room, no live event ever
comes to say it), or before the first thing the relay sends after history; once per
(re)join."""

from __future__ import annotations

import io

import pytest

from udpchat import events as ev
from udpchat.lines import LineUI

pytestmark = pytest.mark.unit

EARLIER = "-- earlier in the room (from the relay's history):"
END = "-- end of history; live from here"


def shown(events: list[ev.ClientEvent]) -> list[str]:
    out = io.StringIO()
    ui = LineUI(out, io.StringIO())
    for event in events:
        ui.on_event(event)
    return [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]


def test_a_rejoin_into_a_quiet_room_hears_the_end_of_its_catch_up_at_once() -> None:
    lines = shown(
        [
            ev.Welcomed("alice", ("alice", "robert"), resumed=True, head=12),
            ev.MessageReceived(10, 0.0, "bob", "bye for now", history=True),
            ev.MemberRenamed(11, 0.0, "bob", "robert", history=True),
            ev.MemberLeft(12, 0.0, "carol", "quit", "bye all", history=True),
        ]
    )
    assert lines[1:] == [
        EARLIER,
        "<bob> bye for now",
        "-- bob is now robert",
        "-- carol left (quit: bye all)",
        END,
    ]


def test_history_short_of_the_head_ends_before_what_the_relay_sends_next() -> None:
    """A newcomer's history holds chat only: events after the last chat message (a join)
    are not in it, so its end is known when the relay sends anything after it."""
    for after in (
        ev.MemberJoined(13, 0.0, "dave"),
        ev.MessageReceived(13, 0.0, "alice", "hi", own=True, local_id=1),
        ev.MembersListed(("alice", "bob")),
        ev.PrivateReceived(0.0, "bob", "alice", "psst"),
        ev.ErrorReported("no such nickname: zed", request=2),
    ):
        lines = shown(
            [
                ev.Welcomed("alice", ("alice", "bob"), resumed=False, head=12),
                ev.MessageReceived(9, 0.0, "bob", "earlier", history=True),
                after,
            ]
        )
        assert lines[1:4] == [EARLIER, "<bob> earlier", END], after


def test_a_notice_of_the_client_does_not_end_the_history() -> None:
    lines = shown(
        [
            ev.Welcomed("alice", ("alice", "bob"), resumed=False, head=12),
            ev.MessageReceived(9, 0.0, "bob", "earlier", history=True),
            ev.ErrorReported("a notice about nothing asked"),
            ev.MessageReceived(10, 0.0, "bob", "later", history=True),
            ev.MessageReceived(12, 0.0, "bob", "last", history=True),
        ]
    )
    assert lines.count(END) == 1 and lines[-1] == END
    assert lines.count(EARLIER) == 1


def test_once_per_rejoin() -> None:
    lines = shown(
        [
            ev.Welcomed("alice", ("alice", "bob"), resumed=False, head=2),
            ev.MessageReceived(2, 0.0, "bob", "one", history=True),
            ev.MessageReceived(3, 0.0, "bob", "two"),
            ev.ConnectionLost("the relay went silent"),
            ev.Welcomed("alice", ("alice", "bob"), resumed=True, head=5),
            ev.MessageReceived(4, 0.0, "bob", "three", history=True),
            ev.MessageReceived(5, 0.0, "bob", "four", history=True),
            ev.MessageReceived(6, 0.0, "bob", "five"),
        ]
    )
    assert lines.count(EARLIER) == 2 and lines.count(END) == 2
    assert lines.index(END) == lines.index("<bob> one") + 1
    assert lines[-2:] == [END, "<bob> five"]
    assert lines[-3] == "<bob> four"


def test_the_client_says_where_the_room_stood_at_the_welcome() -> None:
    from tests.client_support import join_all, make_net, of

    net, relay, (alice, bob) = make_net(("alice", "bob"))
    join_all(net, [alice])
    alice.say("before bob", net.now)
    net.run(0.5)
    head = relay.seq
    join_all(net, [bob])
    (welcomed,) = of(bob, ev.Welcomed)
    assert isinstance(welcomed, ev.Welcomed)
    assert welcomed.head == head >= 1


def test_a_room_that_started_afresh_says_who_came_and_went_meanwhile() -> None:
    """No history can tell a member who rejoins a room that lost its history (a relay
    restarted without its store) who left and who joined: the client compares the list
    it held with WELCOME's, which stays the member list."""
    from tests.client_support import RELAY, client_addr, join_all, make_net, of
    from udpchat.sim import PathModel

    net, relay, (alice, bob, carol, dave) = make_net(("alice", "bob", "carol", "dave"))
    join_all(net, [alice, bob, carol])
    for there, back in ((client_addr(0), RELAY), (RELAY, client_addr(0))):
        net.set_path(there, back, PathModel(loss=1.0))  # alice is cut off
    net.detach(client_addr(2))  # carol is gone for good
    net.run(0.5)
    relay.restart(b"epoch-02")
    join_all(net, [dave])
    for there, back in ((client_addr(0), RELAY), (RELAY, client_addr(0))):
        net.set_path(there, back, PathModel(delay=0.01))
    assert net.run_until(lambda: len(of(alice, ev.Welcomed)) == 2, 30)
    welcomed = of(alice, ev.Welcomed)[-1]
    assert isinstance(welcomed, ev.Welcomed) and welcomed.history_lost
    (away,) = of(alice, ev.MembersChanged)
    assert isinstance(away, ev.MembersChanged)
    assert "carol" in away.left and away.joined == ("dave",)
    assert set(away.left) == {"bob", "carol"} - set(welcomed.members)  # bob: not back yet
    lines = shown([welcomed, away])
    assert lines[-1].startswith("-- while you were away: ")
    assert "carol" in lines[-1] and "dave joined" in lines[-1]


def test_a_resume_with_its_history_says_nothing_more() -> None:
    from tests.client_support import RELAY, client_addr, join_all, make_net, of
    from udpchat.sim import PathModel

    net, _relay, (alice, bob) = make_net(("alice", "bob"))
    join_all(net, [alice, bob])
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    bob.change_nick("robert", net.now)
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    net.set_path(RELAY, client_addr(0), PathModel(delay=0.01))
    assert net.run_until(lambda: len(of(alice, ev.Welcomed)) == 2, 30)
    net.run(1)
    assert not of(alice, ev.MembersChanged)  # the catch-up history told it
    renamed = [e for e in of(alice, ev.MemberRenamed) if isinstance(e, ev.MemberRenamed)]
    assert [(e.old, e.new, e.history) for e in renamed] == [("bob", "robert", True)]
