"""The client's per-datagram shortcuts compute what the general code computes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpchat.client.config import ClientConfig, Counters
from udpchat.client.cursor import RoomCursor
from udpchat.client.ledger import Ledger
from udpchat.client.room import RoomView
from udpchat.client.states import HANDSHAKING, LINKED, SessionState, StateMachine, Trigger
from udpchat.client.uplink import Uplink
from udpchat.names import nick_key

pytestmark = pytest.mark.unit

times = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@given(times, times, times, st.floats(min_value=0.05, max_value=3600.0), times)
def test_wake_at_is_the_earlier_of_ping_and_silence(
    sent: float, heard: float, pinged: float, heartbeat: float, silence: float
) -> None:
    uplink = Uplink(Counters(), silence, 0.0)
    uplink.last_sent, uplink._last_heard, uplink._last_ping = sent, heard, pinged
    uplink._heartbeat, uplink._silence = heartbeat, max(silence, 2 * heartbeat)
    assert uplink.wake_at() == min(uplink.ping_due(), uplink.silent_at)


def test_states_and_triggers_still_work_as_keys() -> None:
    """Identity hashing: sets and the table find the members as before."""
    assert SessionState.JOINED in LINKED and SessionState.JOINED not in HANDSHAKING
    assert SessionState("joined") in LINKED  # looked up by value: the same member
    machine = StateMachine()
    assert machine.fire(Trigger.CONNECT) is SessionState.CONNECTING
    assert {SessionState.IDLE: 1}[SessionState("idle")] == 1


def test_the_own_nickname_key_follows_the_nickname() -> None:
    events: list[object] = []
    ledger = Ledger(ClientConfig("Ann", ("127.0.0.1", 1)), events.append, 0.0)
    room = RoomView("Ann", RoomCursor(events.append), ledger, Counters(), events.append, 0.0)
    assert room._own_key == nick_key("Ann") == room._key("ANN")
    room.nick = "Bob"
    assert room._own_key == nick_key("Bob") and room._key("ann") == nick_key("Ann")
