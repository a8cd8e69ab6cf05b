"""The client session chatting through a scripted relay: pending, posted and refused messages,
requests and their answers, members, history and pacing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.client_support import (
    RELAY,
    TIME,
    FakeRelay,
    FakeSession,
    client_addr,
    client_datagrams,
    drain,
    join_all,
    make_net,
    of,
    relay_net,
    seeded,
    without_ids,
)
from udpchat import events as ev
from udpchat import messages as msg
from udpchat import wire
from udpchat.client.config import ClientConfig, QueueFull
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState

pytestmark = pytest.mark.unit


def test_say_is_pending_then_posted() -> None:
    net, relay, (alice, bob) = make_net(("alice", "bob"))
    join_all(net, [alice, bob])
    drain(alice)
    drain(bob)
    local_id = alice.say("hello", net.now)
    assert alice.pending == 1
    assert drain(alice) == [ev.MessagePending(local_id, "hello")]
    assert net.run_until(lambda: alice.idle, 2)
    (posted,) = of(alice, ev.MessageReceived)
    assert isinstance(posted, ev.MessageReceived)
    assert (posted.own, posted.local_id, posted.text, posted.nick) == (
        True,
        local_id,
        "hello",
        "alice",
    )
    assert posted.seq == relay.seq
    assert alice.pending == 0
    (seen,) = of(bob, ev.MessageReceived)
    assert seen == ev.MessageReceived(relay.seq, float(TIME), "alice", "hello")


def test_action_and_refusal_keep_their_local_ids() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    relay.refuse_next = 1
    first = alice.say("one", net.now)
    second = alice.action("waves", net.now)
    assert net.run_until(lambda: alice.idle, 2)
    refused = of(alice, ev.MessageRefused)
    assert refused == [ev.MessageRefused(first, "one", "slow down")]
    (posted,) = of(alice, ev.MessageReceived)
    assert isinstance(posted, ev.MessageReceived)
    assert posted.action and posted.own and posted.local_id == second


def test_bad_input_raises_value_error_with_one_line() -> None:
    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0)
    cases: list[Callable[[], object]] = [
        lambda: session.say("", 0.0),
        lambda: session.action("x" * (msg.MAX_TEXT_BYTES + 1), 0.0),
        lambda: session.change_nick("two words", 0.0),
        lambda: session.private("/bob", "hi", 0.0),
        lambda: session.quit("x" * 600, 0.0),
    ]
    for case in cases:
        with pytest.raises(ValueError) as info:
            case()
        assert "\n" not in str(info.value) and str(info.value)
    assert session.events() == []
    with pytest.raises(ValueError):
        ClientConfig("", RELAY)


def test_messages_typed_before_joining_are_queued_in_order_and_bounded() -> None:
    net, relay, (alice,) = make_net(max_pending=3)
    ids = [alice.say("early", net.now)]
    alice.connect(net.now)
    ids.append(alice.action("stretches", net.now))
    alice.who(net.now)
    with pytest.raises(QueueFull):
        alice.say("too many", net.now)
    assert alice.pending == 2
    assert net.run_until(lambda: alice.idle, 3)
    received = without_ids(relay.only_session().received)
    assert received == [msg.Say("early"), msg.Action("stretches"), msg.Who()]
    posted = [
        e.local_id for e in of(alice, ev.MessageReceived) if isinstance(e, ev.MessageReceived)
    ]
    assert posted == ids
    assert of(alice, ev.MembersListed) == [ev.MembersListed(("alice",))]


def test_members_follow_joins_leaves_and_nick_changes() -> None:
    net, _relay, (alice, bob, carol) = make_net(("alice", "bob", "carol"))
    join_all(net, [alice, bob, carol])
    assert alice.members == ("alice", "bob", "carol")
    bob.change_nick("robert", net.now)
    assert net.run_until(lambda: "robert" in alice.members, 2)
    assert bob.nick == "robert"
    own = [e for e in of(bob, ev.MemberRenamed) if isinstance(e, ev.MemberRenamed)]
    assert own and own[-1].own and own[-1].new == "robert"
    carol.quit("bye", net.now)
    assert carol.state is SessionState.LEAVING
    assert net.run_until(lambda: carol.state is SessionState.CLOSED, 2)
    assert of(carol, ev.Closed) == [ev.Closed("left the room")]
    assert net.run_until(lambda: alice.members == ("alice", "robert"), 2)
    left = [e for e in of(alice, ev.MemberLeft) if isinstance(e, ev.MemberLeft)]
    assert left and (left[-1].nick, left[-1].reason, left[-1].text) == ("carol", "quit", "bye")


def test_private_messages_and_errors() -> None:
    net, relay, (alice, bob) = make_net(("alice", "bob"))
    join_all(net, [alice, bob])
    alice.private("bob", "psst", net.now)
    assert net.run_until(lambda: bool(of(bob, ev.PrivateReceived)), 2)
    assert of(bob, ev.PrivateReceived) == [ev.PrivateReceived(float(TIME), "alice", "bob", "psst")]
    relay.send(relay.sessions[next(iter(relay.sessions))], msg.Error("no such nickname"))
    assert net.run_until(lambda: bool(of(alice, ev.ErrorReported)), 2)


def test_quit_closes_after_the_timeout_when_the_relay_is_gone() -> None:
    net, _relay, (alice,) = make_net()
    join_all(net, [alice])
    net.detach(RELAY)
    start = net.now
    alice.quit("bye", net.now)
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 5)
    assert net.now - start == pytest.approx(2.0, abs=0.01)
    assert of(alice, ev.Closed) == [ev.Closed("left the room (the relay did not confirm)")]


def test_history_is_flagged_and_gaps_are_reported() -> None:
    net, relay, (alice,) = make_net()
    for text in ("old 0", "old 1", "old 2"):
        relay.history.append(msg.ChatMessage(relay.seq + 1, TIME, "bob", text))
        relay.seq += 1
    join_all(net, [alice])
    net.run(0.5)
    history = [e for e in of(alice, ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert [(e.text, e.history) for e in history] == [(f"old {i}", True) for i in range(3)]
    drain(alice)
    # A live event that skips sequence numbers: the member missed some.
    relay.seq += 2
    event = relay.room_event(lambda seq: msg.ChatMessage(seq, TIME, "bob", "later"))
    relay.send(relay.only_session(), event)
    assert net.run_until(lambda: bool(of(alice, ev.MessageReceived)), 2)
    gap = of(alice, ev.HistoryGap)
    assert gap == [ev.HistoryGap(event.seq - 2, event.seq - 1)]


def test_path_challenge_is_answered_with_the_same_bytes() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    session = relay.only_session()
    net.inject(RELAY, client_addr(0), session.link.encode_path(wire.PathChallenge, b"8 bytes!"))
    net.run(0.1)
    responses = client_datagrams(relay, wire.PathResponse)
    assert [d.data for _, d in responses if isinstance(d, wire.PathResponse)] == [b"8 bytes!"]


def test_a_paste_is_paced_under_the_relays_flood_limits_and_nothing_is_refused() -> None:
    net, relay, (alice, bob) = relay_net(("alice", "bob"))  # the relay's default limits
    join_all(net, [alice, bob])
    start = net.now
    for i in range(30):
        alice.say(f"line {i}", net.now)
    assert net.run_until(lambda: alice.pending == 0, 20)
    assert of(alice, ev.MessageRefused) == []
    texts = [e.text for e in of(bob, ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert texts == [f"line {i}" for i in range(30)]
    config = alice.config
    # 8 at once, then 4.5 a second: the last of 30 cannot be posted before ~4.9 s
    assert net.now - start >= (30 - config.pace_burst) / config.pace_rate - 0.1
    assert relay.stats.flood_refused == 0


class ErrorRelay(FakeRelay):
    """Answers a private message to nobody with ERROR, as a real relay does."""

    def _on_message(self, session: FakeSession, message: msg.Message) -> None:
        if isinstance(message, msg.PrivateSend) and all(
            s.nick != message.to for s in self.sessions.values()
        ):
            session.received.append(message)
            self.send(session, msg.Error(f"no such nickname: {message.to}"))
            return
        super()._on_message(session, message)


def test_an_error_names_the_request_it_answers() -> None:
    net, _, (alice, bob) = make_net(("alice", "bob"), relay=ErrorRelay())
    join_all(net, [alice, bob])
    drain(alice)
    ids = [
        alice.who(net.now),
        alice.private("bob", "psst", net.now),
        alice.private("nobody", "hello?", net.now),
        alice.change_nick("alicia", net.now),
        alice.private("ghost", "boo", net.now),
    ]
    said = alice.say("and a message", net.now)
    assert len(set([*ids, said])) == 6  # one id space for every request
    assert net.run_until(lambda: alice.idle and alice.nick == "alicia", 2)
    errors = of(alice, ev.ErrorReported)
    assert errors == [
        ev.ErrorReported("no such nickname: nobody", ids[2]),
        ev.ErrorReported("no such nickname: ghost", ids[4]),
    ]
    assert len(of(alice, ev.MembersListed)) == 1
