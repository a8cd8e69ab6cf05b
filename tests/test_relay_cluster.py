"""Several relays, one room (protocol.md 6.8): three relay cores on one shared room in memory,
real client sessions on the simulated network, the virtual clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

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
from udpchat.client.states import SessionState
from udpchat.link import SendBufferFull
from udpchat.names import nick_key
from udpchat.relay.memory_shared import MemorySharedLog

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


def test_a_member_that_moves_while_its_join_waits_in_a_batch_is_listed_once() -> None:
    c = cluster(config=replace(CONFIG, batch_notices_above=1))
    front = Forwarder(c.net, FRONT, relay_addr(0))
    c.net.attach(FRONT, front)
    bo, cy = c.join("bo", 1), c.join("cy", 2)
    ann = c.join("ann", 0, via=FRONT)
    assert c.relay_of(0).room.notices.joined == ["ann"]  # announced when the window ends
    front.target = relay_addr(1)
    assert c.net.run_until(lambda: c.relay_of(1).member_nicks() == ["ann", "bo"], 5)
    assert c.relay_of(0).room.notices.joined == []  # announced at once: it moved
    assert c.net.run_until(lambda: ann.state is SessionState.JOINED, 5)
    ann.quit("bye", c.net.now)  # its LEFT, through the other relay, comes after
    c.net.run(1.0)
    assert joined(cy) == ["ann"] and left(cy) == ["ann"]
    for relay in c.relays:
        assert relay.sessions.nick_list() == ("bo", "cy")
    ann = c.join("ann", 0)
    c.settle()
    for relay in c.relays:
        assert relay.sessions.nick_list() == ("ann", "bo", "cy")
        assert relay.room._size() == 3
    for member in (ann, bo, cy):
        assert sorted(member.members) == ["ann", "bo", "cy"]


def test_posts_of_one_turn_are_numbered_in_one_exchange_in_the_order_they_came(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = cluster()
    ann, bo, cy = c.join("ann", 0), c.join("bo", 0), c.join("cy", 0)
    di = c.join("di", 1)
    c.settle()
    core = c.relay_of(0)
    assert core.cluster is not None
    log = core.cluster.log
    batches: list[int] = []
    append_many = MemorySharedLog.append_many

    def counted(self: MemorySharedLog, events: list[Any]) -> list[Any]:
        if self is log:
            batches.append(len(events))
        return append_many(self, events)

    monkeypatch.setattr(MemorySharedLog, "append_many", counted)
    for member in (ann, bo, cy):
        member.say(f"from {member.nick}", c.net.now)  # they reach the relay together
    di.say("from di", c.net.now)
    c.settle()
    assert 3 in batches  # one exchange with the store for the three
    seen = [chat(member) for member in (ann, bo, cy, di)]
    assert all(s == seen[0] for s in seen) and len(seen[0]) == 4
    texts = [text for _, text in seen[0]]
    assert texts.index("from ann") < texts.index("from bo") < texts.index("from cy")
    for member in (ann, bo, cy):
        own = [e for e in of(member, ev.MessageReceived) if getattr(e, "own", False)]
        assert len(own) == 1  # answered POSTED once, delivered once


def test_answers_come_in_request_order_while_posts_wait_to_be_numbered() -> None:
    """protocol.md 6.1: a post waiting for the turn's other posts is answered before a
    request after it that is answered at once (a REFUSED, a WHO)."""
    c = cluster()
    ann = FakeClient("ann", relay_addr(0), seed=1)
    c.net.attach(client_addr(0), ann)
    assert c.net.run_until(lambda: ann.joined, 5)
    c.net.run(0.5)
    ann.received.clear()
    ann.send(m.Say("hello", b"msgid-01"))
    ann.send(m.Say("x" * 20000, b"msgid-02"))  # over MAX_TEXT_BYTES: refused at once
    ann.send(m.Who())
    c.net.run(1.0)
    answers = (m.Posted, m.Refused, m.Members)
    assert [type(x) for x in ann.received if isinstance(x, answers)] == list(answers)


def test_a_member_dropped_while_a_turns_posts_are_answered_leaves_after_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member who cannot keep up is dropped while a batch of posts goes out: its LEFT is
    numbered after the batch, and every member sees it after the batch too."""
    c = cluster()
    nicks = ("ann", "bo", "cy")
    clients = [FakeClient(n, relay_addr(0), seed=i + 1) for i, n in enumerate(nicks)]
    for i, client in enumerate(clients):
        c.net.attach(client_addr(i), client)
        assert c.net.run_until(lambda client=client: client.joined, 5)
    c.net.run(0.5)
    core = c.relay_of(0)
    cy = next(mb for mb in core.members.values() if mb.nick == "cy")
    link_type = type(cy.link)
    send = link_type.send

    def full_for_cy(link: Any, data: bytes, lazy: bool = False) -> None:
        if link is cy.link:
            raise SendBufferFull()
        send(link, data, lazy)

    monkeypatch.setattr(link_type, "send", full_for_cy)
    ann, bo = clients[0], clients[1]
    bo.received.clear()
    ann.send(m.Say("one", b"msgid-01"))
    ann.send(m.Say("two", b"msgid-02"))
    c.net.run(1.0)
    events = bo.room_events()
    assert [seq for seq, _ in events] == sorted(seq for seq, _ in events)
    assert [text for _, text in events][-3:] == ["ann: one", "ann: two", "Left"]
