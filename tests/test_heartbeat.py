"""An idle member's heartbeat (protocol.md 7.1): a datagram every heartbeat, a PING that the
relay answers only as often as the client's silence detection needs."""

from __future__ import annotations

import pytest

from tests.client_support import join_all, make_net, of, relay_net
from udpchat import events as ev
from udpchat import wire
from udpchat.client.uplink import ask_after
from udpchat.relay.config import RelayConfig
from udpchat.sim import PathModel

pytestmark = pytest.mark.unit

STANDBY = ("127.0.0.1", 9999)  # another relay of the room, never reached here


def test_probing_keeps_two_and_a_half_heartbeats_and_2_5_s_and_starts_after_one() -> None:
    assert ask_after(1.0, 5.0) == 2.5  # the defaults: every other heartbeat answered
    assert ask_after(1.0, 2.0) == 1.0  # fail-over's silence: every one
    assert ask_after(0.5, 5.0) == 2.5
    assert ask_after(0.1, 5.0) == 2.5  # probing keeps 2.5 s however short the heartbeat
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


@pytest.mark.parametrize(
    ("heartbeat", "one_way"), [(0.1, 0.2), (0.1, 0.5), (1.0, 0.55), (1.0, 1.6)]
)
def test_a_slow_path_or_a_short_heartbeat_never_loses_an_idle_relay(
    heartbeat: float, one_way: float
) -> None:
    """The answer to a PING must be due before probing begins, and probing must have time
    (protocol.md 7.1): neither a round trip as long as a heartbeat or more nor a heartbeat
    of a tenth of a second ends a healthy session, or turns heartbeats into probe bursts."""
    net, relay, nodes = relay_net(
        ("alice",), PathModel(delay=one_way), relay_config=RelayConfig(heartbeat=heartbeat)
    )
    join_all(net, nodes, timeout=30)
    (alice,) = nodes
    net.run(3)
    sent, received = alice.stats.link.datagrams_sent, alice.stats.link.datagrams_received
    net.run(40)
    assert not of(alice, ev.ConnectionLost) and not of(alice, ev.Reconnecting)
    assert relay.member_nicks() == ["alice"]
    sent = alice.stats.link.datagrams_sent - sent
    received = alice.stats.link.datagrams_received - received
    assert sent <= 40 / heartbeat + 2  # a heartbeat each, no bursts of probes
    assert received <= sent + 2  # an answer each at most (the window cuts one off)
