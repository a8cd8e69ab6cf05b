"""Several relays, one room (protocol.md 6.8): three relay cores on one shared room in memory,
real client sessions on the simulated network, the virtual clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.client_support import client_addr, drain, of
from tests.cluster_support import (
    CONFIG,
    Forwarder,
    chat,
    cluster,
    joined,
    left,
    relay_addr,
)
from tests.fakeclient import FakeClient
from udpchat import events as ev
from udpchat import messages as m
from udpchat import wire
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.names import nick_key
from udpchat.relay import cluster as cluster_module
from udpchat.relay.events import RoomNotice
from udpchat.sim import PathModel

pytestmark = pytest.mark.unit

FRONT = ("10.0.2.1", 4000)  # the address a moving member knows as its relay


def test_one_order_seen_identically_by_every_member_of_every_relay() -> None:
    c = cluster()
    members = [c.join(nick, i % 3) for i, nick in enumerate(("ann", "bo", "cy", "di", "ed", "fa"))]
    for round_ in range(4):
        for i, member in enumerate(members):
            member.say(f"{member.nick} {round_}", c.net.now)
            if i % 2:
                c.net.run(0.001)
    c.settle()
    seen = [chat(member) for member in members]
    assert len(seen[0]) == 24
    assert all(s == seen[0] for s in seen)
    numbers = [seq for seq, _ in seen[0]]
    assert numbers == sorted(set(numbers))
    assert {text for _, text in seen[0]} == {f"{m.nick} {r}" for m in members for r in range(4)}
    for member in members:
        assert not of(member, ev.HistoryGap)
    assert sum(r.stats.foreign_events for r in c.relays) > 0


def test_who_and_welcome_list_the_whole_room() -> None:
    c = cluster()
    ann, bo = c.join("ann", 0), c.join("bo", 1)
    cy = c.join("cy", 2)
    welcome = of(cy, ev.Welcomed)[0]
    assert isinstance(welcome, ev.Welcomed) and welcome.members == ("ann", "bo", "cy")
    c.settle()
    for relay in c.relays:
        assert relay.sessions.nick_list() == ("ann", "bo", "cy")
    for member in (ann, bo, cy):
        assert sorted(member.members) == ["ann", "bo", "cy"]
        member.who(c.net.now)
    c.settle()
    for member in (ann, bo, cy):
        listed = [e for e in of(member, ev.MembersListed) if isinstance(e, ev.MembersListed)]
        assert listed[-1].members == ("ann", "bo", "cy")
    bo.quit("bye", c.net.now)
    c.settle()
    assert c.relay_of(2).sessions.nick_list() == ("ann", "cy")
    assert left(ann) == ["bo"] and left(cy) == ["bo"]


def test_nicknames_are_unique_across_relays() -> None:
    c = cluster()
    c.join("Ann", 0)
    copy = c.start("ANN", 1)
    c.net.run(2.0)
    rejected = of(copy, ev.JoinRejected)
    assert [e.code for e in rejected if isinstance(e, ev.JoinRejected)] == [
        wire.RejectCode.NICK_TAKEN
    ]
    # Two joins for one nickname at the same moment on two relays: exactly one gets it.
    first, second = c.start("zed", 1), c.start("zed", 2)
    c.net.run(2.0)
    states = sorted(s.state is SessionState.JOINED for s in (first, second))
    assert states == [False, True]
    assert sum(nick_key("zed") in r.sessions.by_nick for r in c.relays) == 1
    # A rename to a nickname held on another relay is refused; a free one is announced.
    bo = c.join("bo", 2)
    bo.change_nick("zed", c.net.now)
    c.settle()
    errors = [e.text for e in of(bo, ev.ErrorReported) if isinstance(e, ev.ErrorReported)]
    assert errors == ["the nickname zed is taken"]
    bo.change_nick("bob", c.net.now)
    c.settle()
    assert all(r.sessions.nick_list() == ("Ann", "bob", "zed") for r in c.relays)


def test_a_private_message_reaches_a_member_of_another_relay() -> None:
    c = cluster()
    ann, bo = c.join("ann", 0), c.join("bo", 1)
    ann.private("BO", "psst", c.net.now)
    ann.private("nobody", "hello?", c.net.now)
    c.settle()
    got = [e for e in of(bo, ev.PrivateReceived) if isinstance(e, ev.PrivateReceived)]
    assert [(e.sender, e.to, e.text) for e in got] == [("ann", "bo", "psst")]
    echo = [e for e in of(ann, ev.PrivateReceived) if isinstance(e, ev.PrivateReceived)]
    assert [(e.sender, e.to, e.text) for e in echo] == [("ann", "bo", "psst")]
    errors = [e.text for e in of(ann, ev.ErrorReported) if isinstance(e, ev.ErrorReported)]
    assert errors == ["no such nickname: nobody"]


@pytest.mark.parametrize("history", [CONFIG.history, 0])
def test_a_member_moves_to_another_relay_and_resumes_there(history: int) -> None:
    """Same nickname, nothing announced, catch-up without gap or duplicate; a post whose
    POSTED was lost is delivered once (by catch-up, or without history by its message id)."""
    c = cluster(history=history)
    front = Forwarder(c.net, FRONT, relay_addr(0))
    c.net.attach(FRONT, front)
    ann = c.join("ann", 0, via=FRONT)
    bo, cy = c.join("bo", 1), c.join("cy", 2)
    ann.say("before", c.net.now)
    c.settle()
    drain(bo), drain(cy)
    # ann's relay posts these but its answers never reach her; then she is moved.
    front.drop_answers = True
    in_flight = [ann.say(f"in flight {i}", c.net.now) for i in range(2)]
    c.net.run(0.3)
    bo.say("meanwhile", c.net.now)
    c.net.run(0.1)
    front.target, front.drop_answers = relay_addr(1), False
    assert c.net.run_until(lambda: c.relay_of(1).member_nicks() == ["ann", "bo"], 10)
    assert c.net.run_until(lambda: c.relay_of(0).member_nicks() == [], 5)
    c.settle()
    ann.say("after", c.net.now)
    c.settle()
    for other in (bo, cy):
        assert joined(other) == [] and left(other) == []
        assert [t for _, t in chat(other)] == ["in flight 0", "in flight 1", "meanwhile", "after"]
    assert chat(bo) == chat(cy)
    own = [e for e in of(ann, ev.MessageReceived) if isinstance(e, ev.MessageReceived) and e.own]
    assert sorted(e.local_id for e in own if e.local_id in in_flight) == sorted(in_flight)
    assert ann.nick == "ann"
    whole = [
        (e.seq, e.text) for e in of(ann, ev.MessageReceived) if isinstance(e, ev.MessageReceived)
    ]
    numbers = [seq for seq, _ in whole]
    assert numbers == sorted(set(numbers))  # no duplicate, in order
    if history:
        assert not of(ann, ev.HistoryGap)
        texts = ["before", "in flight 0", "in flight 1", "meanwhile", "after"]
        assert [t for _, t in whole] == texts
    else:  # nothing to catch up from: a gap, and her posts answered by their message ids
        assert [t for _, t in whole] == ["before", "in flight 0", "in flight 1", "after"]
        assert len(of(ann, ev.HistoryGap)) == 1
        assert c.relay_of(1).stats.resent_requests == 2


@pytest.mark.parametrize("batched", [False, True])
def test_a_lost_relays_members_leave_once_except_those_that_moved(batched: bool) -> None:
    config = replace(CONFIG, batch_notices_above=2 if batched else 16)
    c = cluster(config=config)
    front = Forwarder(c.net, FRONT, relay_addr(2))
    c.net.attach(FRONT, front)
    ann, bo = c.join("ann", 0), c.join("bo", 1)
    cy, di = c.join("cy", 2), c.join("di", 2)
    ed = c.join("ed", 2, via=FRONT)
    c.settle()
    for member in (ann, bo, ed):
        drain(member)
    front.target = relay_addr(0)  # ed moves before the relay dies
    assert c.net.run_until(lambda: c.relay_of(0).member_nicks() == ["ann", "ed"], 10)
    c.settle()
    lost = c.relay_of(2)
    c.net.detach(relay_addr(2))
    c.room.lose(lost.log.relay_id)  # type: ignore[attr-defined]
    c.net.run(CONFIG.timeout * 2)
    for member in (ann, bo, ed):
        assert sorted(left(member)) == ["cy", "di"]  # exactly once each, room-wide
        assert joined(member) == []
    if batched:
        assert any(isinstance(e, ev.MembersLeft) for e in of(ann, ev.MembersLeft))
    assert [r.stats.relays_lost for r in c.relays[:2]] == [1, 0]
    for relay in c.relays[:2]:
        assert relay.sessions.nick_list() == ("ann", "bo", "ed")
    assert cy.state is not SessionState.JOINED and di.state is not SessionState.JOINED


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
        assert sorted(member.members) == ["ann", "bo", "cy"]
    drain(ann), drain(bo), drain(cy)
    bo.say("new room", c.net.now)
    c.settle()
    assert chat(ann) == chat(cy) == chat(bo) and [t for _, t in chat(ann)] == ["new room"]
    assert c.relay_of(0).room_seq == c.room.last_seq < 10


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    posts=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from([0.0, 0.0004, 0.002, 0.01])),
        min_size=1,
        max_size=24,
    ),
    seed=st.integers(0, 2**16),
)
def test_any_interleaving_of_posts_on_three_relays_is_one_order_everywhere(
    posts: list[tuple[int, float]], seed: int
) -> None:
    c = cluster(seed=seed, model=PathModel(delay=0.001, jitter=0.003))
    members = [c.join(nick, i % 3) for i, nick in enumerate(("ann", "bo", "cy", "di", "ed", "fa"))]
    for n, (who, pause) in enumerate(posts):
        members[who].say(f"{n}", c.net.now)
        if pause:
            c.net.run(pause)
    c.settle(20.0)
    seen = [chat(member) for member in members]
    assert all(s == seen[0] for s in seen)
    assert sorted(int(t) for _, t in seen[0]) == list(range(len(posts)))
    numbers = [seq for seq, _ in seen[0]]
    assert numbers == sorted(set(numbers))


def test_a_resent_post_another_relay_logged_is_answered_in_its_place() -> None:
    """The copy reaches a relay before the event its first copy became: it is answered
    POSTED with that event's number once the event is there, and not sent to the poster."""
    c = cluster()
    first, second, third = (
        FakeClient(nick, relay_addr(i), seed=i) for i, nick in enumerate(("ann", "bo", "cy"))
    )
    for i, client in enumerate((first, second, third)):
        c.net.attach(client_addr(i), client)
        assert c.net.run_until(lambda cl=client: cl.joined, 5)  # type: ignore[misc]
    c.net.run(0.5)
    # Both copies arrive at their relays at the same instant, the first one first.
    first.send(m.Say("hello", b"msgid-01"))
    second.send(m.Say("hello", b"msgid-01"))
    c.net.run(1.0)
    seq = c.room.last_seq
    assert first.of(m.Posted) == [m.Posted(seq)] and second.of(m.Posted) == [m.Posted(seq)]
    assert [x.seq for x in second.of(m.ChatMessage)] == []  # its own, answered instead
    assert [(x.seq, x.text) for x in third.of(m.ChatMessage)] == [(seq, "hello")]
    assert c.relay_of(1).stats.resent_requests == 1


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
        "the room's store cannot be reached: not delivered; send it again",
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


def room_view(session: ClientSession) -> list[tuple[int, str]]:
    """(seq, what) of every live room event a member was shown, its own posts included."""
    out: list[tuple[int, str]] = []
    for e in of(session, ev.ClientEvent):  # type: ignore[arg-type]
        seq = getattr(e, "seq", None)
        if seq is None or getattr(e, "history", False):
            continue
        # what every member is shown alike (a batch naming a member is shown without it)
        fields = ("text", "nick", "old", "new") if not isinstance(e, ev.MembersJoined) else ()
        out.append((seq, repr((type(e).__name__, *(getattr(e, f, None) for f in fields)))))
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["say", "say", "say", "join", "quit", "nick", "away", "back"]),
            st.integers(0, 8),
            st.sampled_from([0.0, 0.001, 0.01, 0.05]),
        ),
        min_size=1,
        max_size=20,
    ),
    batched=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_interleaving_of_comings_goings_and_posts_is_one_room(
    steps: list[tuple[str, int, float]], batched: bool, seed: int
) -> None:
    """Members joining, leaving, renaming and posting on three relays at once, the store
    going away and coming back: every member sees the events of its time in the room in one
    order, and lists the same members."""
    config = replace(CONFIG, batch_notices_above=2 if batched else 16)
    c = cluster(seed=seed, config=config, model=PathModel(delay=0.001, jitter=0.002))
    live = [c.join(nick, i % 3) for i, nick in enumerate(("ann", "bo", "cy"))]
    joined_count = len(live)
    for n, (what, who, pause) in enumerate(steps):
        if what in ("away", "back"):  # the store out of reach, or back
            c.room.available = what == "back"
        elif what == "join" or not live:
            live.append(c.start(f"new{n}", n % 3))
            joined_count += 1
        else:
            member = live[who % len(live)]
            if member.state is not SessionState.JOINED:
                pass
            elif what == "say":
                member.say(f"{n}", c.net.now)
            elif what == "quit":
                member.quit("bye", c.net.now)
                live.remove(member)
            else:
                member.change_nick(f"r{n}", c.net.now)
        if pause:
            c.net.run(pause)
    c.room.available = True
    c.net.run(3.0)
    c.settle(20.0)
    refused = [s for s in live if of(s, ev.JoinRejected)]  # joined while the store was away
    assert all(s.state is SessionState.CLOSED for s in refused)
    members = [s for s in live if s not in refused]
    assert all(s.state is SessionState.JOINED for s in members)
    views = [dict(room_view(s)) for s in members]
    for view in views:  # where two members both saw an event, they saw the same one
        for other in views:
            assert all(other[seq] == what for seq, what in view.items() if seq in other)
    for s in members:
        numbers = [seq for seq, _ in room_view(s)]
        assert numbers == sorted(set(numbers))
    expected = tuple(sorted(s.nick for s in members))
    for relay in c.relays:
        assert relay.sessions.nick_list() == expected
    for s in members:
        assert tuple(sorted(s.members)) == expected


def test_only_the_sessions_holder_resumes_it_on_another_relay() -> None:
    """The token and epoch are no secret: a JOIN on another relay without the proof is a
    stranger's (NICK_TAKEN); with it, the session moves and its old relay lets it go."""
    c = cluster()
    ann = FakeClient("ann", relay_addr(0), seed=1)
    c.net.attach(client_addr(0), ann)
    assert c.net.run_until(lambda: ann.joined, 5)
    (token,) = c.relay_of(0).members
    copied = wire.Resume(c.relay_of(0).epoch, token, 0, bytes(wire.RESUME_PROOF_SIZE))
    stranger = FakeClient("ann", relay_addr(1), seed=2, resume=copied)
    c.net.attach(client_addr(1), stranger)
    assert c.net.run_until(lambda: stranger.reject is not None, 5)
    assert stranger.reject is not None and stranger.reject.code == wire.RejectCode.NICK_TAKEN
    holder = FakeClient(
        "ann", relay_addr(2), seed=3, resume=copied, resume_secret=ann.resume_secret
    )
    c.net.attach(client_addr(2), holder)
    assert c.net.run_until(lambda: holder.joined, 5)
    c.net.run(0.5)
    assert c.relay_of(0).member_nicks() == [] and c.relay_of(2).member_nicks() == ["ann"]
    assert c.room.last_seq == 1  # ann's first JOINED only: no LEFT, no JOINED for the move
    assert [x.seq for x in holder.of(m.Joined)] == [1]  # that one, as catch-up
    assert [r.sessions.nick_list() for r in c.relays] == [("ann",)] * 3
