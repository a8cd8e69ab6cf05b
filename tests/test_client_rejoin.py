"""The client session's liveness and rejoining: heartbeat, silence, backoff, RESET, SHUTDOWN,
resume, limbo and catch-up, nickname suffixes."""

from __future__ import annotations

import itertools

import pytest

from tests.client_support import (
    EPOCH,
    RELAY,
    FakeRelay,
    client_addr,
    client_datagrams,
    drain,
    join_all,
    make_net,
    of,
    seeded,
    without_ids,
)
from udpchat import events as ev
from udpchat import messages as msg
from udpchat import wire
from udpchat.client.config import ClientConfig
from udpchat.client.joining import first_retry, max_retry
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.link import LinkConfig
from udpchat.sim import PathModel

pytestmark = pytest.mark.unit


def test_heartbeat_every_beat_and_a_ping_every_other_then_probes_when_the_relay_is_quiet() -> (
    None
):
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    net.run(0.5)
    start_pings = len(client_datagrams(relay, wire.Ping))
    start_acks = len(client_datagrams(relay, wire.Ack))
    net.run(6)
    pings = [t for t, _ in client_datagrams(relay, wire.Ping)][start_pings:]
    acks = [t for t, _ in client_datagrams(relay, wire.Ack)][start_acks:]
    beats = sorted(pings + acks)
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert gaps and all(g == pytest.approx(1.0, abs=0.03) for g in gaps)
    # protocol.md 7.1: with a measured round trip, a bare ACK while the next heartbeat's
    # answer comes before probing would begin; the relay answers only the PINGs, every other
    # heartbeat with the defaults.
    ping_gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert ping_gaps and all(g == pytest.approx(2.0, abs=0.03) for g in ping_gaps)
    assert len(acks) == pytest.approx(len(pings), abs=1)
    # The relay goes silent: after ask_after (2.5 s) of silence, a probe every quarter
    # heartbeat.
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    silent_from = net.now
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    probes = [t for t, _ in client_datagrams(relay, wire.Ping) if t > silent_from + 2.1]
    probe_gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert len(probes) >= 8
    assert probe_gaps and all(g == pytest.approx(0.25, abs=0.03) for g in probe_gaps)
    assert of(alice, ev.ConnectionLost) == [ev.ConnectionLost("the relay went silent")]
    assert net.now - silent_from == pytest.approx(5.0, abs=1.1)


def test_silence_leads_to_rejoin_with_doubling_backoff_and_resume() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    old = relay.only_session()
    net.detach(RELAY)
    assert net.run_until(lambda: len(of(alice, ev.Reconnecting)) >= 4, 60)
    reconnecting = [e for e in of(alice, ev.Reconnecting) if isinstance(e, ev.Reconnecting)]
    assert [(e.attempt, e.delay) for e in reconnecting] == [
        (1, 0.5),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
    ]
    assert alice.state is SessionState.RECONNECTING
    net.attach(RELAY, relay)
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 20)
    resume = relay.joins[-1].resume
    # Our own JOINED (seq 1) never reached us, so the last event we processed is WELCOME's.
    assert resume is not None and (resume.epoch, resume.token, resume.last_seq) == (
        EPOCH,
        old.token,
        0,
    )
    assert len(resume.proof) == wire.RESUME_PROOF_SIZE
    assert of(alice, ev.Welcomed)[-1] == ev.Welcomed("alice", ("alice",), resumed=True, head=1)
    assert alice.stats.reconnects == 1


def test_reconnect_delay_is_capped() -> None:
    net, _relay, (alice,) = make_net(max_reconnect_delay=3.0, join_timeout=1.0)
    join_all(net, [alice])
    net.detach(RELAY)
    assert net.run_until(lambda: len(of(alice, ev.Reconnecting)) >= 5, 60)
    delays = [e.delay for e in of(alice, ev.Reconnecting) if isinstance(e, ev.Reconnecting)]
    assert delays[:5] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_no_reconnect_means_closed() -> None:
    net, _relay, (alice,) = make_net(reconnect=False)
    join_all(net, [alice])
    net.detach(RELAY)
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 10)
    kinds = [type(e) for e in drain(alice)]
    assert kinds[-2:] == [ev.ConnectionLost, ev.Closed]


def test_reset_after_a_relay_restart_rejoins_at_once_and_resends() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    net.set_path(client_addr(0), RELAY, PathModel(loss=1.0))
    local_id = alice.say("lost in the crash", net.now)
    net.run(0.2)
    relay.restart(b"epoch-02")
    net.set_path(client_addr(0), RELAY, PathModel(delay=0.01))
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 3)
    assert of(alice, ev.Reconnecting) == [ev.Reconnecting(1, 0.0)]
    assert net.run_until(lambda: alice.idle, 3)
    # a new epoch: the user is told the room's history is gone
    assert of(alice, ev.Welcomed)[-1] == ev.Welcomed("alice", ("alice",), False, history_lost=True)
    # The WHO marks the end of catch-up history; resends wait for it.
    assert without_ids(relay.only_session().received) == [msg.Who(), msg.Say("lost in the crash")]
    posted = [e for e in of(alice, ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert [(e.local_id, e.seq) for e in posted] == [(local_id, 2)]  # 1 is our JOINED


def test_shutdown_is_a_lost_relay_with_its_reason() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    relay.send(relay.only_session(), msg.Shutdown("maintenance"))
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 2)
    assert of(alice, ev.ConnectionLost) == [
        ev.ConnectionLost("the relay is shutting down: maintenance")
    ]
    assert alice.state is SessionState.RECONNECTING


def test_resume_resends_exactly_what_the_relay_did_not_receive() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    up, down = (client_addr(0), RELAY), (RELAY, client_addr(0))
    first = alice.say("one", net.now)
    assert net.run_until(lambda: alice.idle, 2)
    # The relay still hears us but we no longer hear it: "two" is posted, its POSTED lost.
    net.set_path(*down, PathModel(loss=1.0))
    second = alice.say("two", net.now)
    net.run(0.3)
    # Now nothing gets through: "three" and the WHO never reach the relay.
    net.set_path(*up, PathModel(loss=1.0))
    third = alice.say("three", net.now)
    alice.who(net.now)
    old = relay.only_session()
    assert without_ids(old.received) == [msg.Say("one"), msg.Say("two")]
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    net.set_default(PathModel(delay=0.01))
    assert net.run_until(lambda: alice.idle, 20)
    new = relay.only_session()
    assert new.token != old.token
    assert without_ids(new.received[-2:]) == [msg.Say("three"), msg.Who()]
    assert msg.Say("two") not in new.received
    assert alice.pending == 0
    received = [e for e in of(alice, ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert [(e.local_id, e.text, e.history) for e in received] == [
        (first, "one", False),
        (second, "two", True),  # confirmed by the catch-up history
        (third, "three", False),
    ]
    assert [e.seq for e in received] == sorted(e.seq for e in received)
    assert of(alice, ev.MessageRefused) == []
    assert len(of(alice, ev.MembersListed)) == 1  # the user's WHO only


def test_limbo_messages_missing_from_history_are_reported_unconfirmed() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    down = (RELAY, client_addr(0))
    net.set_path(*down, PathModel(loss=1.0))
    relay.refuse_next = 1
    refused = alice.say("refused, but the answer is lost", net.now)
    posted = alice.say("posted, answer lost", net.now)
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    net.set_default(PathModel(delay=0.01))
    assert net.run_until(lambda: alice.idle, 20)
    assert of(alice, ev.MessageRefused) == [
        ev.MessageRefused(
            refused,
            "refused, but the answer is lost",
            "the relay did not confirm this message before the connection was lost",
        )
    ]
    confirmed = [e for e in of(alice, ev.MessageReceived) if isinstance(e, ev.MessageReceived)]
    assert [e.local_id for e in confirmed] == [posted]


def test_catch_up_after_an_outage_with_a_gap() -> None:
    net, relay, (alice, bob) = make_net(("alice", "bob"))
    join_all(net, [alice, bob])
    drain(alice)
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    net.set_path(client_addr(0), RELAY, PathModel(loss=1.0))
    for i in range(4):
        bob.say(f"while away {i}", net.now)
    assert net.run_until(lambda: bob.idle, 3)
    relay.history = relay.history[-2:]  # the relay forgot the oldest two
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    net.set_default(PathModel(delay=0.01))
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 20)
    net.run(0.5)
    texts = [
        (e.text, e.history)
        for e in of(alice, ev.MessageReceived)
        if isinstance(e, ev.MessageReceived)
    ]
    assert texts == [("while away 2", True), ("while away 3", True)]
    gaps = of(alice, ev.HistoryGap)
    assert len(gaps) == 1 and isinstance(gaps[0], ev.HistoryGap)
    assert gaps[0].last_missing - gaps[0].first_missing == 1
    assert alice.members == ("alice", "bob")


def test_taken_nick_on_a_rejoin_after_restart_gets_a_suffix() -> None:
    net, relay, (alice, _mallory) = make_net(("alice", "mallory"))
    join_all(net, [alice])
    net.detach(RELAY)
    assert net.run_until(lambda: bool(of(alice, ev.ConnectionLost)), 10)
    relay.restart(b"epoch-02")
    net.attach(RELAY, relay)
    # Someone else takes the name on the new relay first.
    relay.answer_handshake = True
    impostor = ClientSession(ClientConfig("ALICE", RELAY), seeded(5), net.now)
    net.detach(client_addr(1))  # the same address, another session
    net.attach(client_addr(1), impostor)
    join_all(net, [impostor])
    assert net.run_until(lambda: alice.state is SessionState.JOINED, 30)
    assert alice.nick == "alice_"
    errors = [e for e in of(alice, ev.ErrorReported) if isinstance(e, ev.ErrorReported)]
    assert errors == [ev.ErrorReported("the nickname alice is taken; trying alice_")]


def test_suffix_stays_within_the_nickname_limit() -> None:
    nick = "n" * 32
    session = ClientSession(ClientConfig(nick, RELAY), seeded(1), 0.0)
    assert session.nick == nick
    assert session._handshake.suffixed_nick(session.nick) == "n" * 31 + "_"
    assert session._handshake.suffixed_nick(session.nick) == "n" * 30 + "__"


def hello_gaps(relay: FakeRelay, after: float) -> list[float]:
    times = [t for t, _ in client_datagrams(relay, wire.Hello) if t > after]
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


def test_a_rejoin_retransmits_on_the_last_links_round_trip() -> None:
    """protocol.md 4 (RFC 9002 6.2.2): a rejoin's HELLO goes again after three times the
    last link's smoothed RTT (20 ms here, so the floor: 100 ms), doubling up to eight times
    that; a first join, on a path never measured, after 250 ms up to 2 s."""
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    net.run(3.0)
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))  # HELLOs arrive, nothing returns
    assert net.run_until(lambda: bool(of(alice, ev.Reconnecting)), 10)
    lost_at = net.now
    net.run(5.0)
    assert hello_gaps(relay, lost_at)[:6] == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]

    net, relay, (bob,) = make_net(("bob",))
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    bob.connect(net.now)
    net.run(8.0)
    assert hello_gaps(relay, -1.0)[:5] == [0.25, 0.5, 1.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("last_rtt", "first", "cap"),
    [
        (None, 0.25, 2.0),  # never measured: the default schedule
        (0.0005, 0.1, 0.8),  # loopback: the floor
        (0.05, 0.15, 1.2),
        (0.0, 0.1, 0.8),  # a clock too coarse to see the round trip
        (0.5, 0.25, 2.0),  # a slow path: never later than an unmeasured one
        (2.0, 0.25, 2.0),
    ],
)
def test_first_retry_follows_the_round_trip_within_bounds(
    last_rtt: float | None, first: float, cap: float
) -> None:
    assert first_retry(last_rtt) == pytest.approx(first)
    assert max_retry(first_retry(last_rtt)) == pytest.approx(cap)


def test_a_rejoin_after_a_link_never_measured_keeps_the_default_schedule() -> None:
    """HELLO and JOIN both went twice (no handshake estimate) and alice never said anything
    (no sample): her rejoin retransmits as a first join does. Her link assumes a 10 ms round
    trip, so that taking that assumption for a measurement would show (a 100 ms retry)."""
    net, relay, (alice,) = make_net(link=LinkConfig(initial_rtt=0.01))
    original = net.send
    dropped: set[int] = set()

    def drop_first_hello_and_join(src: Address, dst: Address, data: bytes) -> None:
        kind = wire.datagram_type(data)
        handshake = kind in (wire.DatagramType.HELLO, wire.DatagramType.JOIN)
        if dst == RELAY and handshake and kind not in dropped:
            dropped.add(kind)
            return
        original(src, dst, data)

    net.send = drop_first_hello_and_join  # type: ignore[method-assign]
    join_all(net, [alice])
    assert len(dropped) == 2
    net.run(2.0)
    net.set_path(RELAY, client_addr(0), PathModel(loss=1.0))
    assert net.run_until(lambda: bool(of(alice, ev.Reconnecting)), 10)
    lost_at = net.now
    net.run(5.0)
    assert hello_gaps(relay, lost_at)[:3] == [0.25, 0.5, 1.0]
