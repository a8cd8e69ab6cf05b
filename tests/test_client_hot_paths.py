"""The client's per-datagram shortcuts compute what the general code computes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.client_support import client_addr, join_all, relay_net
from udpchat import wire
from udpchat.client.config import ClientConfig, Counters
from udpchat.client.cursor import RoomCursor
from udpchat.client.ledger import Ledger
from udpchat.client.room import RoomView
from udpchat.client.states import HANDSHAKING, LINKED, SessionState, StateMachine, Trigger
from udpchat.client.uplink import Uplink
from udpchat.endpoint import Address
from udpchat.link import ACK_DELAY
from udpchat.names import nick_key
from udpchat.sim import SimNetwork

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


def _acks_and_data(net: SimNetwork, member: Address) -> list[tuple[float, str]]:
    """(time sent, "data" or "ack") of the relay's DATA to ``member`` and ``member``'s ACKs."""
    seen: list[tuple[float, str]] = []

    def tap(src: Address, dst: Address, data: bytes) -> None:
        if dst == member and wire.datagram_type(data) == wire.DatagramType.DATA:
            seen.append((net.now, "data"))
        elif src == member and wire.datagram_type(data) == wire.DatagramType.ACK:
            seen.append((net.now, "ack"))

    net.taps.append(tap)
    return seen


def test_data_after_a_quiet_spell_is_acknowledged_at_once() -> None:
    net, _, (ann, bob) = relay_net(("ann", "bob"), pace_rate=0.0)
    join_all(net, [ann, bob])
    net.run(2.0)
    seen = _acks_and_data(net, client_addr(1))
    for i in range(5):
        ann.say(f"line {i}", net.now)
        net.run(0.1)
    data = [t for t, kind in seen if kind == "data"]
    acks = [t for t, kind in seen if kind == "ack"]
    assert len(data) == 5 and len(acks) == 5
    delay = 0.005  # relay_net's one-way delay: each ACK leaves as its DATA arrives
    for sent, ack in zip(data, acks, strict=True):
        assert ack == pytest.approx(sent + delay, abs=1e-9)


def test_dense_data_still_shares_acks() -> None:
    """Packets closer together than the quiet spell keep the delayed ACK: one per two."""
    net, _, (ann, bob) = relay_net(("ann", "bob"), pace_rate=0.0)
    join_all(net, [ann, bob])
    net.run(2.0)
    seen = _acks_and_data(net, client_addr(1))
    for i in range(40):
        ann.say(f"line {i}", net.now)
        net.run(ACK_DELAY / 2)
    net.run(0.5)
    data = [t for t, kind in seen if kind == "data"]
    acks = [t for t, kind in seen if kind == "ack"]
    assert len(data) >= 8
    # The first, after the quiet spell, at once; then one for every two.
    assert acks[0] == pytest.approx(data[0] + 0.005, abs=1e-9)
    assert len(acks) <= len(data) // 2 + 1
