"""An idle member's heartbeat (protocol.md 7.1): a datagram every heartbeat, a PING that the
relay answers only as often as the client's silence detection needs."""

from __future__ import annotations

import pytest

from tests.client_support import client_datagrams, join_all, make_net, of, relay_net
from udpchat import events as ev
from udpchat import wire
from udpchat.client.uplink import ask_after

pytestmark = pytest.mark.unit

STANDBY = ("127.0.0.1", 9999)  # another relay of the room, never reached here


def test_a_ping_is_needed_three_heartbeats_before_silence_and_never_within_one() -> None:
    assert ask_after(1.0, 5.0) == 2.0  # the defaults: every other heartbeat answered
    assert ask_after(1.0, 2.0) == 1.0  # fail-over's silence: every one
    assert ask_after(0.5, 5.0) == 3.5
    assert ask_after(3.0, 6.0) == 3.0


def test_idle_members_stay_with_half_the_answers() -> None:
    net, relay, nodes = relay_net(("alice", "bob"))
    join_all(net, nodes)
    net.run(2)
    before = [(n.stats.link.datagrams_sent, n.stats.link.datagrams_received) for n in nodes]
    net.run(35)  # three and a half member timeouts
    assert relay.member_nicks() == ["alice", "bob"]
    for node, (sent, received) in zip(nodes, before, strict=True):
        assert not of(node, ev.ConnectionLost) and not of(node, ev.Reconnecting)
        sent = node.stats.link.datagrams_sent - sent
        received = node.stats.link.datagrams_received - received
        assert sent == pytest.approx(35, abs=1)  # one heartbeat a second
        assert received == pytest.approx(sent / 2, abs=1)  # the relay answers every other


def test_with_relays_to_move_to_every_heartbeat_is_a_ping() -> None:
    net, relay, (alice,) = make_net(fallbacks=(STANDBY,))
    join_all(net, [alice])
    net.run(0.5)
    start = len(relay.datagrams)
    net.run(4)
    beats = relay.datagrams[start:]
    assert len(beats) == pytest.approx(4, abs=1)
    assert all(isinstance(d, wire.Ping) for _, d in beats)
    assert not [t for t, _ in client_datagrams(relay, wire.Ack) if t > net.now - 4]
