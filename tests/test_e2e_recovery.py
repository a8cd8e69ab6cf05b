"""End to end through the library: members who fall silent, relays that restart, paths that
break for a while. Short relay timers keep these quick."""

from __future__ import annotations

import time

import pytest

from tests.e2e_support import (
    CutProxy,
    Recorder,
    assert_one_room_order,
    members,
    relay_config,
    running_relay,
    wait_until,
)
from udpchat import events as ev
from udpchat.relay_server import RelayOptions, RelayServer

pytestmark = pytest.mark.e2e


def count(kind: type, n: int, where=lambda _: True):  # type: ignore[no-untyped-def]
    """A condition for ``Recorder.wait_for``: at least ``n`` events of ``kind`` match."""
    return lambda events: sum(isinstance(e, kind) and where(e) for e in events) >= n


def chat_view(log: Recorder) -> list[tuple[int, str, str]]:
    """(seq, nick, text) of every chat message seen, history included."""
    return [(e.seq, e.nick, e.text) for e in log.chat()]


def assert_exactly_once_in_order(log: Recorder, texts: list[str]) -> None:
    seen = [e.text for e in log.chat() if e.text in texts]
    assert seen == texts, seen


# --- 4. timeout eviction --------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_a_member_that_goes_silent_is_announced_as_timed_out() -> None:
    with (
        running_relay(heartbeat=0.2, timeout=1.0) as relay,
        members(relay.address, "alice", "bob", "carol") as [alice, bob, carol],
    ):
        carol.client.close()  # gone without a QUIT: no more datagrams at all
        closed_at = time.monotonic()
        for member in (alice, bob):
            left = member.log.wait_event(ev.MemberLeft, 5)
            assert (left.nick, left.reason) == ("carol", "timed out")
        # not before the relay's timeout (minus at most one heartbeat of slack)
        assert time.monotonic() - closed_at >= 0.7
        assert relay.members() == ["alice", "bob"]
        assert alice.client.members == bob.client.members == ("alice", "bob")
        # the members that kept their heartbeat are still here, and still talk
        alice.client.say("still here")
        bob.log.wait_event(ev.MessageReceived, 5, lambda e: e.text == "still here")
        for member in (alice, bob):
            assert len(member.log.of(ev.MemberLeft)) == 1
            assert not member.log.of(ev.ConnectionLost)


# --- 5. the relay restarts on the same port -------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("goodbye", [False, True], ids=["killed", "shutdown"])
def test_members_rejoin_a_restarted_relay_keeping_their_nicknames(goodbye: bool) -> None:
    config = relay_config(heartbeat=0.2, timeout=2.0)
    first = RelayServer(RelayOptions(port=0, config=config)).start()
    address = first.address
    second: RelayServer | None = None
    try:
        with members(address, "alice", "Bob") as [alice, bob]:
            alice.client.say("before")
            bob.log.wait_event(ev.MessageReceived, 5, lambda e: e.text == "before")
            assert alice.client.wait_idle(5)

            first.stop(goodbye=goodbye)
            if goodbye:
                for member in (alice, bob):
                    lost = member.log.wait_event(ev.ConnectionLost, 5)
                    assert "shutting down" in lost.reason
            # typed while there is no relay at all
            alice.client.say("during a1")
            bob.client.say("during b1")
            alice.client.say("during a2")

            second = RelayServer(RelayOptions(port=address[1], config=config)).start()
            assert second.address == address
            for member in (alice, bob):
                assert member.log.wait_for(count(ev.Welcomed, 2), 15), member.log.snapshot()
                assert member.client.wait_idle(10)
            assert alice.client.nick == "alice" and bob.client.nick == "Bob"
            assert wait_until(lambda: set(second.members()) == {"alice", "Bob"}, 5)  # type: ignore[union-attr]
            for member in (alice, bob):
                welcome = member.log.of(ev.Welcomed)[-1]
                assert not welcome.resumed  # a new relay: a new place in a new room
                assert member.log.of(ev.ConnectionLost)
                assert not member.log.of(ev.MessageRefused)

            # every message typed during the outage arrives exactly once, live or as history
            for member in (alice, bob):
                member.log.wait_for(
                    lambda es: (
                        sum(
                            isinstance(e, ev.MessageReceived) and e.text.startswith("during")
                            for e in es
                        )
                        >= 3
                    ),
                    5,
                )
                assert_exactly_once_in_order(member.log, ["during a1", "during a2"])
                assert_exactly_once_in_order(member.log, ["during b1"])
            # and the room goes on
            bob.client.say("after")
            alice.log.wait_event(ev.MessageReceived, 5, lambda e: e.text == "after")
    finally:
        first.stop(goodbye=False)
        if second is not None:
            second.stop(goodbye=False)


# --- 6. catch-up after the path was cut -----------------------------------------------------------

CUT_SECONDS = 2.0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("evicted", [False, True], ids=["retransmitted", "evicted-and-resumed"])
def test_a_member_cut_off_for_a_while_gets_what_it_missed(evicted: bool) -> None:
    # With a 1 s relay timeout the cut-off member is evicted and must rejoin with resume and
    # catch up from history; with the default timeout its session survives and the link's
    # retransmissions fill the gap.
    timers = {"heartbeat": 0.2, "timeout": 1.0} if evicted else {}
    with (
        running_relay(**timers) as relay,
        CutProxy(relay.address) as proxy,
        members(relay.address, "alice") as [alice],
        members(proxy.address, "bob") as [bob],
    ):
        alice.client.say("warm-up")
        bob.log.wait_event(ev.MessageReceived, 5, lambda e: e.text == "warm-up")
        assert bob.client.wait_idle(5)

        proxy.cut.set()
        missed = [f"missed {i}" for i in range(10)]
        typed = [f"typed {i}" for i in range(3)]
        for text in missed:
            alice.client.say(text)
        for text in typed:
            bob.client.say(text)
        assert alice.client.wait_idle(5)  # the relay has posted all of alice's
        if evicted:
            left = alice.log.wait_event(ev.MemberLeft, 5)
            assert (left.nick, left.reason) == ("bob", "timed out")
        # The outage itself lasts a while (this wait is the scenario, not a synchronisation),
        # and both sides must have retransmitted into it.
        time.sleep(CUT_SECONDS)
        assert wait_until(lambda: proxy.dropped >= 12, 5), proxy.dropped
        proxy.cut.clear()

        assert bob.log.wait_for(count(ev.MessageReceived, 1 + len(missed) + len(typed)), 15), (
            bob.log.snapshot()
        )
        assert alice.log.wait_for(count(ev.MessageReceived, 1 + len(missed) + 3), 10)
        assert bob.client.wait_idle(5)
        assert_exactly_once_in_order(bob.log, missed)
        assert_exactly_once_in_order(alice.log, typed)
        assert_exactly_once_in_order(bob.log, typed)
        assert bob.client.nick == "bob"
        # one room order: what both saw agrees seq by seq, and nobody saw a seq twice
        views = [chat_view(alice.log), chat_view(bob.log)]
        for view in views:
            seqs = [seq for seq, _, _ in view]
            assert seqs == sorted(set(seqs))
        assert dict((s, (n, t)) for s, n, t in views[0]) == dict(
            (s, (n, t)) for s, n, t in views[1]
        )
        if evicted:
            lost = bob.log.of(ev.ConnectionLost)
            assert [e.reason for e in lost] == ["the relay lost our session"]  # a RESET
            assert len(bob.log.of(ev.Welcomed)) == 2
            assert all(e.history for e in bob.log.chat() if e.text in missed)
            is_bob = count(ev.MemberJoined, 2, lambda e: e.nick == "bob")
            assert alice.log.wait_for(is_bob, 5)
            rejoined = [e for e in alice.log.of(ev.MemberJoined) if e.nick == "bob"][-1]
            assert rejoined.seq > max(seq for seq, nick, _ in views[0] if nick == "alice")
        else:
            assert len(bob.log.of(ev.Welcomed)) == 1
            assert not alice.log.of(ev.MemberLeft)
            assert_one_room_order([alice.log, bob.log], 1 + len(missed) + len(typed))
        assert not bob.log.of(ev.MessageRefused) and not bob.log.of(ev.HistoryGap)
