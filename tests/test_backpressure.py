"""Back-pressure on joiners (protocol.md 4.3): a crowd joining at once is admitted at the
relay's pace, told BUSY with a slot each, and every client waits as asked and gets in.
Real relay core and client sessions on the simulated network, virtual clock."""

from __future__ import annotations

import itertools

import pytest

from tests.client_support import RELAY, client_addr, relay_net
from udpchat import wire
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.sim import PathModel, SimNetwork

pytestmark = pytest.mark.unit


def crowd_config(burst: int, rate: float) -> RelayConfig:
    """Admissions paced at ``burst`` then ``rate``; the per-host limits out of the way (the
    simulated clients share one host)."""
    return RelayConfig(
        admission_burst=burst,
        admission_rate=rate,
        handshake_burst=1000,
        handshake_rate=1000.0,
        max_members_per_host=1000,
        max_members_per_network=1000,
    )


Trace = list[tuple[float, Address, Address, wire.Datagram]]


def trace(net: SimNetwork) -> Trace:
    """Every handshake datagram as it is sent: (time, from, to, decoded)."""
    seen: Trace = []

    def tap(src: Address, dst: Address, data: bytes) -> None:
        if wire.datagram_type(data) in (
            wire.DatagramType.JOIN,
            wire.DatagramType.BUSY,
            wire.DatagramType.REJECT,
        ):
            seen.append((net.now, src, dst, wire.decode_datagram(data)))

    net.taps.append(tap)
    return seen


def test_a_crowd_beyond_the_pace_is_told_to_wait_and_everyone_gets_in() -> None:
    nicks = tuple(f"m{i}" for i in range(30))
    net, relay, sessions = relay_net(nicks, relay_config=crowd_config(burst=5, rate=20.0))
    seen = trace(net)
    for session in sessions:
        session.connect(net.now)
    start = net.now
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in sessions), 10)
    assert relay.stats.busy > 0
    assert not [d for *_, d in seen if isinstance(d, wire.Reject)]
    # admitted at the pace: 5 at once, then 20 a second, so the last came after ~1.25 s
    assert net.now - start >= (30 - 5) / 20.0 - 0.1
    # each BUSY of the first wave booked its own later slot: the crowd comes back spread out
    busy = [d for *_, d in seen if isinstance(d, wire.Busy)]
    first_wave = [b.retry_ms for b in busy[:20]]
    assert first_wave == sorted(first_wave) and len(set(first_wave)) == len(first_wave)
    # every member sees the whole room, once the last batch of join notices went out
    assert net.run_until(lambda: all(sorted(s.members) == sorted(nicks) for s in sessions), 2)


def test_a_client_sends_its_join_again_only_after_the_wait_it_was_told() -> None:
    nicks = tuple(f"m{i}" for i in range(12))
    net, _relay, sessions = relay_net(nicks, relay_config=crowd_config(burst=2, rate=4.0))
    seen = trace(net)
    for session in sessions:
        session.connect(net.now)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in sessions), 15)
    waited = 0
    for i in range(len(nicks)):
        me = client_addr(i)
        busy = [(t, d) for t, src, dst, d in seen if dst == me and isinstance(d, wire.Busy)]
        joins = [t for t, src, _, d in seen if src == me and isinstance(d, wire.Join)]
        for told_at, answer in busy:
            assert isinstance(answer, wire.Busy)
            later = [t for t in joins if t > told_at]
            assert later, "the JOIN was sent again"
            assert later[0] >= told_at + answer.retry_ms / 1000 - 1e-6
            waited += 1
    assert waited > 0


def test_waiting_as_told_never_ends_a_first_join_at_its_usual_deadline() -> None:
    """One admission every 5 s: the fourth member gets in ~15 s after it asked, well past
    the 10 s a join waits for an answer, because each BUSY moved its deadline."""
    nicks = ("a", "b", "c", "d")
    net, relay, sessions = relay_net(nicks, relay_config=crowd_config(burst=1, rate=0.2))
    for session in sessions:
        session.connect(net.now)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in sessions), 30)
    assert net.now >= 14.0
    assert relay.stats.busy >= 3
    assert [s.state for s in sessions] == [SessionState.JOINED] * 4


def test_a_busy_outside_a_join_or_for_another_nonce_is_counted_and_changes_nothing() -> None:
    nicks = ("a", "b")
    net, relay, (a, b) = relay_net(nicks, relay_config=crowd_config(burst=1, rate=0.5))
    a.connect(net.now)
    assert net.run_until(lambda: a.state is SessionState.JOINED, 2)
    a.receive_datagram(wire.encode_busy(b"x" * 8, 5000), RELAY, net.now)
    assert a.state is SessionState.JOINED and a.stats.unexpected == 1
    b.connect(net.now)  # told BUSY for ~2 s; a stray BUSY for another nonce is not heeded
    assert net.run_until(lambda: relay.stats.busy == 1, 1)
    net.run(0.05)  # b has its BUSY: about 2 s to wait
    assert b.state is SessionState.JOINING
    b.receive_datagram(wire.encode_busy(b"x" * 8, 5000), RELAY, net.now)
    assert b.stats.wrong_session == 1
    assert net.run_until(lambda: b.state is SessionState.JOINED, 3)


@pytest.mark.parametrize(("burst", "rate"), [(100, 400.0), (7, 3.0), (64, 1000.0)])
def test_exactly_the_burst_is_admitted_at_one_instant(burst: int, rate: float) -> None:
    """The pace is a sum of intervals: rounding must not cost the last of the burst its place."""
    nicks = tuple(f"m{i}" for i in range(burst + 1))
    net, relay, sessions = relay_net(nicks, relay_config=crowd_config(burst, rate))
    for session in sessions:
        session.connect(net.now)
    assert net.run_until(lambda: relay.stats.busy > 0, 1)
    assert relay.stats.busy == 1
    assert sum(s.state is SessionState.JOINED for s in sessions) <= burst


def test_after_a_busy_a_rejoin_retries_on_the_schedule_of_an_unmeasured_path() -> None:
    """protocol.md 4.3: a rejoin starts its retries from its last round trip (100 ms on this
    path), but once told BUSY the rest of its attempt goes 250 ms doubling to 2 s: a relay
    pacing admissions answers late, and every JOIN it gets meanwhile books a slot."""
    nicks = ("a", "b", "c")
    net, _relay, sessions = relay_net(nicks, relay_config=crowd_config(burst=1, rate=1.0))
    for session in sessions:
        session.connect(net.now)
    assert net.run_until(lambda: all(s.state is SessionState.JOINED for s in sessions), 10)
    net.run(3.0)
    for i in range(len(nicks)):
        net.set_path(RELAY, client_addr(i), PathModel(loss=1.0))
    assert net.run_until(lambda: all(s.state is SessionState.CONNECTING for s in sessions), 10)
    seen = trace(net)
    hellos: list[tuple[float, Address]] = []
    net.taps.append(
        lambda src, dst, data: hellos.append((net.now, src))
        if wire.datagram_type(data) == wire.DatagramType.HELLO
        else None
    )
    told: list[Address] = []
    original = net.send

    def lose_accepts_after_a_busy(src: Address, dst: Address, data: bytes) -> None:
        kind = wire.datagram_type(data)
        if kind == wire.DatagramType.BUSY and not told:
            told.append(dst)
        if kind == wire.DatagramType.ACCEPT and dst in told:
            return
        original(src, dst, data)

    net.send = lose_accepts_after_a_busy  # type: ignore[method-assign]
    net.run(0.5)  # a few HELLOs unanswered
    net.set_default(PathModel(delay=0.005))
    assert net.run_until(lambda: bool(told), 10)
    (waiting,) = told
    busy_at = next(t for t, _, dst, d in seen if dst == waiting and isinstance(d, wire.Busy))
    # until then its HELLOs went on the short schedule of its last round trip (10 ms here:
    # 100 ms, doubling), never on the 250 ms one
    asked = [t for t, src in hellos if src == waiting and t < busy_at]
    assert min(round(b - a, 3) for a, b in itertools.pairwise(asked)) < 0.25
    net.run(6.0)
    joins = [t for t, src, _, d in seen if src == waiting and isinstance(d, wire.Join)]
    after = [t for t in joins if t > busy_at]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(after)]
    assert gaps[:3] == [0.25, 0.5, 1.0]
