"""The client session under garbage and misuse: foreign, malformed and unexpected datagrams are
counted and dropped, misuse raises LocalProtocolError, and the state table is complete."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.client_support import (
    RELAY,
    drain,
    join_all,
    make_net,
    payloads,
    seeded,
)
from tests.fakeclient import random_keys
from udpchat import events as ev
from udpchat import wire
from udpchat.client.config import ClientConfig, LocalProtocolError
from udpchat.client.session import ClientSession
from udpchat.client.states import TABLE, SessionState, StateMachine, Trigger
from udpchat.endpoint import Address
from udpchat.link import Link

pytestmark = pytest.mark.unit


def test_datagrams_for_other_sessions_are_counted_and_dropped() -> None:
    net, _relay, (alice,) = make_net()
    join_all(net, [alice])
    drain(alice)
    other = Link(b"N" * 8, keys=random_keys(3))
    other.ping()
    for data in other.datagrams_to_send(net.now):
        alice.receive_datagram(data, RELAY, net.now)
    alice.receive_datagram(wire.encode_reset(b"N" * 8, bytes(16)), RELAY, net.now)
    alice.receive_datagram(b"\x00garbage", RELAY, net.now)
    alice.receive_datagram(wire.encode_hello(b"h" * 8), RELAY, net.now)
    stats = alice.stats
    assert (stats.wrong_session, stats.malformed, stats.unexpected) == (2, 1, 1)
    assert alice.state is SessionState.JOINED
    assert drain(alice) == []


def _session_in(state: str) -> ClientSession:
    net, relay, (alice,) = make_net()
    if state == "idle":
        return alice
    if state == "connecting":
        relay.answer_handshake = False
        alice.connect(net.now)
        return alice
    join_all(net, [alice])
    if state == "reconnecting":
        net.detach(RELAY)
        net.run_until(lambda: alice.state is SessionState.RECONNECTING, 10)
    return alice


@settings(max_examples=150, deadline=None)
@given(
    state=st.sampled_from(["idle", "connecting", "joined", "reconnecting"]),
    garbage=st.lists(st.binary(max_size=1300), max_size=8),
)
def test_arbitrary_bytes_never_raise(state: str, garbage: list[bytes]) -> None:
    session = _session_in(state)
    before = session.state
    for data in garbage:
        session.receive_datagram(data, RELAY, 100.0)
    assert session.state is before
    stats = session.stats
    dropped = stats.malformed + stats.wrong_session + stats.unexpected + stats.replays
    assert dropped >= sum(1 for d in garbage if d) - stats.bad_messages


@settings(max_examples=100, deadline=None)
@given(
    fields=st.lists(
        st.one_of(
            st.integers(-(2**63), 2**64 - 1),
            st.binary(max_size=20),
            st.text(max_size=10),
            st.booleans(),
            st.none(),
        ),
        max_size=8,
    ),
    kind=st.integers(0, 20),
)
def test_wellformed_msgpack_of_any_shape_never_raises(fields: list[object], kind: int) -> None:
    session = _session_in("joined")
    session.receive_datagram(wire.pack([1, kind, *fields]), RELAY, 100.0)
    assert session.state is SessionState.JOINED


def test_state_table_is_complete_and_closed_is_final() -> None:
    sources = {state for state, _ in TABLE}
    targets = set(TABLE.values())
    assert sources == set(SessionState) - {SessionState.CLOSED}
    assert targets == set(SessionState) - {SessionState.IDLE}
    assert all(state is SessionState.CLOSED for state in targets - sources)


def test_every_state_and_trigger_is_listed_or_refused() -> None:
    """Walk the table: from every state, each trigger either moves to the state the table
    lists or raises LocalProtocolError and leaves the state as it was; CLOSED is final."""
    for state in SessionState:
        for trigger in Trigger:
            machine = StateMachine()
            machine.state = state
            listed = TABLE.get((state, trigger))
            assert machine.allows(trigger) is (listed is not None)
            if listed is None:
                with pytest.raises(LocalProtocolError, match=trigger.value):
                    machine.fire(trigger)
                assert machine.state is state
            else:
                assert machine.fire(trigger) is listed
        if state is not SessionState.CLOSED:
            assert (state, Trigger.CLOSE) in TABLE  # every session can end
    assert not any(state is SessionState.CLOSED for state, _ in TABLE)
    # Every state is reachable from IDLE.
    reached, frontier = {SessionState.IDLE}, [SessionState.IDLE]
    while frontier:
        here = frontier.pop()
        for (state, _), target in TABLE.items():
            if state is here and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(SessionState)


def test_datagrams_from_another_address_are_counted_and_dropped() -> None:
    net, relay, (alice,) = make_net()
    join_all(net, [alice])
    drain(alice)
    stranger: Address = ("10.9.9.9", 4000)
    reset = wire.encode_reset(relay.only_session().token, bytes(16))
    for data in (reset, b"\x00garbage", wire.encode_hello(b"h" * 8)):
        alice.receive_datagram(data, stranger, net.now)
    stats = alice.stats
    assert stats.foreign == 3
    assert (stats.wrong_session, stats.malformed, stats.unexpected) == (0, 0, 0)
    assert alice.state is SessionState.JOINED
    assert drain(alice) == []


def test_misuse_raises_local_protocol_error() -> None:
    net, _relay, (alice,) = make_net()
    join_all(net, [alice])
    with pytest.raises(LocalProtocolError):
        alice.connect(net.now)
    alice.quit("bye", net.now)
    with pytest.raises(LocalProtocolError):
        alice.quit("again", net.now)
    with pytest.raises(LocalProtocolError):
        alice.say("too late", net.now)
    assert net.run_until(lambda: alice.state is SessionState.CLOSED, 3)
    calls: list[Callable[[], object]] = [
        lambda: alice.connect(net.now),
        lambda: alice.who(net.now),
        lambda: alice.change_nick("bob", net.now),
        lambda: alice.private("bob", "x", net.now),
        lambda: alice.quit("", net.now),
    ]
    for call in calls:
        with pytest.raises(LocalProtocolError):
            call()
    assert payloads(alice, net.now) == []
    assert alice.next_timer() is None


def test_quit_before_joining_closes_at_once() -> None:
    session = ClientSession(ClientConfig("alice", RELAY), seeded(1), 0.0)
    session.connect(0.0)
    local_id = session.say("never sent", 0.0)
    session.quit("changed my mind", 0.0)
    assert session.state is SessionState.CLOSED
    assert session.events()[-2:] == [
        ev.MessageRefused(
            local_id, "never sent", "the session closed before the relay confirmed this message"
        ),
        ev.Closed("left the room"),
    ]
    assert session.pending == 0
