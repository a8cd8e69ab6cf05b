"""The reliability layer on a simulated lossy network with a virtual clock."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakeclient import random_keys, swap
from tests.linknode import LinkNode
from udpchat import wire
from udpchat.link import Link, LinkConfig, SendBufferFull
from udpchat.sim import PathModel, SimNetwork

pytestmark = pytest.mark.unit

KEYS = random_keys(1)
A = ("10.0.0.1", 1)
B = ("10.0.0.2", 2)


def opened_envelope(data: bytes) -> wire.Protected:
    envelope = wire.decode_datagram(data)
    assert isinstance(envelope, wire.Protected)
    return envelope


def make_pair(seed: int, model: PathModel, config: LinkConfig | None = None):
    net = SimNetwork(seed=seed, default=model)
    cfg = config or LinkConfig()
    a = LinkNode(Link(b"A" * 8, cfg, keys=KEYS), B)
    b = LinkNode(Link(b"B" * 8, cfg, keys=swap(KEYS)), A)
    net.attach(A, a)
    net.attach(B, b)
    return net, a, b


def pump(net: SimNetwork, sender: LinkNode, messages: list[bytes], limit: float) -> None:
    """Offer messages as fast as the send buffer takes them, then let the network run."""
    pending = list(messages)
    end = net.now + limit
    while pending and net.now < end:
        while pending:
            try:
                sender.link.send(pending[0])
            except SendBufferFull:
                break
            pending.pop(0)
        if not net.step():
            break
    assert not pending, "sender could not queue everything in time"


def test_lossless_delivery_in_order() -> None:
    net, a, b = make_pair(1, PathModel())
    msgs = [f"message {i}".encode() for i in range(200)]
    pump(net, a, msgs, 10)
    assert net.run_until(lambda: a.link.idle, 5)
    assert b.delivered == msgs
    assert a.link.stats.retransmissions == 0


def test_small_messages_are_bundled() -> None:
    net, a, b = make_pair(1, PathModel())
    for i in range(50):
        a.link.send(b"x%d" % i)
    net.run_until(lambda: a.link.idle, 5)
    assert len(b.delivered) == 50
    assert a.link.stats.packets_sent == 1


def test_large_message_is_fragmented_and_reassembled() -> None:
    net, a, b = make_pair(3, PathModel(loss=0.2, reorder=0.2))
    big = ("é" * 9000).encode()  # 18,000 bytes of UTF-8
    a.link.send(big)
    a.link.send(b"after")
    assert net.run_until(lambda: a.link.idle, 30)
    assert b.delivered == [big, b"after"]
    assert a.link.stats.packets_sent >= len(big) // wire.MAX_DATAGRAM_SIZE + 1


def test_every_datagram_fits_the_size_limit() -> None:
    net, a, b = make_pair(4, PathModel(loss=0.1))
    sizes: list[int] = []
    net.taps.append(lambda src, dst, data: sizes.append(len(data)))
    for n in (1, 200, 1100, 1180, 1200, 5000, 65536):
        a.link.send(bytes(n))
    assert net.run_until(lambda: a.link.idle, 30)
    assert max(sizes) <= wire.MAX_DATAGRAM_SIZE
    assert [len(m) for m in b.delivered] == [1, 200, 1100, 1180, 1200, 5000, 65536]


def test_lost_packet_is_retransmitted_within_a_few_rto() -> None:
    net, a, b = make_pair(5, PathModel(delay=0.0002))
    a.link.send(b"warm-up")
    net.run_until(lambda: a.link.idle, 1)
    # drop exactly the next datagram from A
    dropped: list[bytes] = []
    original = net.send

    def lossy(src, dst, data):  # type: ignore[no-untyped-def]
        if src == A and not dropped:
            dropped.append(data)
            return
        original(src, dst, data)

    net.send = lossy  # type: ignore[method-assign]
    start = net.now
    a.link.send(b"important")
    assert net.run_until(lambda: b.delivered[-1:] == [b"important"], 1)
    assert net.now - start < 3 * a.link.rtt.rto + 0.002
    assert a.link.stats.retransmissions == 1


def test_fast_retransmit_before_rto() -> None:
    config = LinkConfig(min_rto=0.5)  # a long RTO: only loss detection can be quick
    net, a, b = make_pair(6, PathModel(delay=0.001), config)
    for i in range(5):
        a.link.send(b"m%d" % i)
        net.run(0.0001)  # one packet each
    first_lost: list[bytes] = []
    original = net.send

    def drop_first(src, dst, data):  # type: ignore[no-untyped-def]
        if src == A and wire.datagram_type(data) == wire.DatagramType.DATA and not first_lost:
            first_lost.append(data)
            return
        original(src, dst, data)

    net.send = drop_first  # type: ignore[method-assign]
    start = net.now
    for i in range(5, 10):
        a.link.send(b"m%d" % i)
        net.step()
    assert net.run_until(lambda: len(b.delivered) == 10, 0.4)
    assert net.now - start < 0.1
    assert a.link.stats.fast_retransmissions >= 1


def test_duplicates_and_reordering_are_hidden() -> None:
    net, a, b = make_pair(7, PathModel(duplicate=0.5, reorder=0.5, jitter=0.003))
    msgs = [b"%d" % i for i in range(300)]
    for m in msgs:
        a.link.send(m)
        net.run(0.0005)
    assert net.run_until(lambda: a.link.idle, 10)
    assert b.delivered == msgs
    assert b.link.stats.duplicates > 0


def test_link_reports_death_instead_of_retrying_forever() -> None:
    net, a, _b = make_pair(8, PathModel())
    a.link.send(b"hello")
    net.run_until(lambda: a.link.idle, 1)
    net.detach(B)
    a.link.send(b"into the void")
    assert net.run_until(lambda: a.link.dead, 120)
    assert a.link.stats.retransmissions == a.link.config.max_retransmissions
    assert a.link.next_timer() is None
    assert a.link.datagrams_to_send(net.now) == []


def test_send_buffer_applies_back_pressure() -> None:
    link = Link(b"T" * 8, LinkConfig(send_buffer=64 * 1024), keys=KEYS)
    link.send(bytes(40_000))
    with pytest.raises(SendBufferFull):
        link.send(bytes(30_000))
    assert link.send_buffer_free == 64 * 1024 - 40_000


def test_window_bounds_packets_in_flight() -> None:
    net, a, b = make_pair(9, PathModel(delay=0.05), LinkConfig(window=8))
    for _ in range(40):
        a.link.send(bytes(1000))
    seen = 0
    for _ in range(2000):
        seen = max(seen, a.link.in_flight)
        if not net.step() or a.link.idle:
            break
    assert a.link.idle
    assert seen == 8
    assert len(b.delivered) == 40


def test_replayed_datagram_is_ignored() -> None:
    sender = Link(b"S" * 8, keys=KEYS)
    receiver = Link(b"R" * 8, keys=swap(KEYS))
    sender.send(b"once")
    (datagram,) = sender.datagrams_to_send(0.0)
    decoded = receiver.open(opened_envelope(datagram))
    assert isinstance(decoded, wire.Data)
    assert receiver.receive(decoded, 0.001) == [b"once"]
    assert receiver.receive(decoded, 0.002) is None
    assert receiver.stats.replays == 1


def test_impossible_ack_is_rejected() -> None:
    link = Link(b"S" * 8, keys=KEYS)
    bogus = wire.Ack(b"S" * 8, 0, 5, 0)  # acknowledges packets never sent
    assert link.receive(bogus, 0.0) is None
    assert link.stats.invalid == 1


def test_delayed_ack_is_bounded() -> None:
    sender = Link(b"S" * 8, keys=KEYS)
    receiver = Link(b"R" * 8, keys=swap(KEYS))
    sender.send(b"one")
    (datagram,) = sender.datagrams_to_send(0.0)
    decoded = receiver.open(opened_envelope(datagram))
    assert isinstance(decoded, wire.Data)
    receiver.receive(decoded, 0.0)
    assert receiver.datagrams_to_send(0.0) == []  # held back, hoping to piggyback
    deadline = receiver.next_timer()
    assert deadline is not None and 0 < deadline <= receiver.config.ack_delay
    (ack,) = receiver.datagrams_to_send(deadline)
    assert isinstance(sender.open(opened_envelope(ack)), wire.Ack)


@pytest.mark.parametrize("every", [1, 2, 4])
def test_an_ack_goes_at_once_after_ack_every_packets_in_order(every: int) -> None:
    config = LinkConfig(ack_every=every)
    sender = Link(b"S" * 8, config, keys=KEYS)
    receiver = Link(b"R" * 8, config, keys=swap(KEYS))
    for i in range(every):
        assert receiver.datagrams_to_send(0.0) == []  # below the count: held back
        sender.send(b"packet %d" % i)
        (datagram,) = sender.datagrams_to_send(0.0)
        decoded = receiver.open(opened_envelope(datagram))
        assert isinstance(decoded, wire.Data)
        receiver.receive(decoded, 0.0)
    (ack,) = receiver.datagrams_to_send(0.0)
    acked = sender.open(opened_envelope(ack))
    assert isinstance(acked, wire.Ack) and acked.ack == every


def test_an_ack_only_datagram_is_never_acknowledged() -> None:
    """protocol.md 5.3 (RFC 9002: ACK frames alone are not ack-eliciting): a peer's ACK,
    new information or not, draws no datagram and sets no timer."""
    sender = Link(b"S" * 8, keys=KEYS)
    receiver = Link(b"R" * 8, keys=swap(KEYS))
    sender.send(b"one")
    (data,) = sender.datagrams_to_send(0.0)
    decoded = receiver.open(opened_envelope(data))
    assert isinstance(decoded, wire.Data)
    receiver.receive(decoded, 0.0)
    deadline = receiver.next_timer()
    assert deadline is not None
    (ack,) = receiver.datagrams_to_send(deadline)
    acked = sender.open(opened_envelope(ack))
    assert isinstance(acked, wire.Ack)
    assert sender.receive(acked, deadline) == []
    assert sender.idle and sender.next_timer() is None
    assert sender.datagrams_to_send(deadline + 1.0) == []


def test_ack_every_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="ack_every"):
        LinkConfig(ack_every=0)


def test_ping_is_answered_at_once() -> None:
    a = Link(b"A" * 8, keys=KEYS)
    b = Link(b"B" * 8, keys=swap(KEYS))
    a.ping()
    (ping,) = a.datagrams_to_send(0.0)
    decoded = b.open(opened_envelope(ping))
    assert isinstance(decoded, wire.Ping)
    assert b.receive(decoded, 0.0) == []
    (reply,) = b.datagrams_to_send(0.0)
    assert isinstance(a.open(opened_envelope(reply)), wire.Ack)


# --- properties -----------------------------------------------------------------------------

paths = st.builds(
    PathModel,
    loss=st.floats(0, 0.5),
    duplicate=st.floats(0, 0.3),
    reorder=st.floats(0, 0.3),
    delay=st.floats(0.0001, 0.02),
    jitter=st.floats(0, 0.01),
)
message_lists = st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=40)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    forward=paths,
    backward=paths,
    a_to_b=message_lists,
    b_to_a=message_lists,
)
@pytest.mark.timeout(300)
def test_exactly_once_in_order_under_any_impairment(
    seed: int,
    forward: PathModel,
    backward: PathModel,
    a_to_b: list[bytes],
    b_to_a: list[bytes],
) -> None:
    net = SimNetwork(seed=seed)
    config = LinkConfig(max_retransmissions=60)
    a = LinkNode(Link(b"A" * 8, config, keys=KEYS), B)
    b = LinkNode(Link(b"B" * 8, config, keys=swap(KEYS)), A)
    net.attach(A, a)
    net.attach(B, b)
    net.set_path(A, B, forward)
    net.set_path(B, A, backward)
    for m in a_to_b:
        a.link.send(m)
    for m in b_to_a:
        b.link.send(m)
    # Lossy phase: bounds must hold at every step; prefixes only, never garbage.
    for _ in range(3000):
        if not net.step() or (a.link.idle and b.link.idle):
            break
        for node in (a, b):
            assert node.link.in_flight <= wire.WINDOW
            assert len(node.link._buffer) < wire.WINDOW
            assert len(node.link._partial) <= 64 * 1024
        assert b.delivered == a_to_b[: len(b.delivered)]
        assert a.delivered == b_to_a[: len(a.delivered)]
    # The network heals: everything drains.
    net.set_path(A, B, PathModel())
    net.set_path(B, A, PathModel())
    assert net.run_until(lambda: a.link.idle and b.link.idle, 120)
    assert b.delivered == a_to_b
    assert a.delivered == b_to_a
    assert not a.link.dead and not b.link.dead


def test_huge_packet_number_jump_is_cheap_and_clears_the_window() -> None:
    link = Link(b"R" * 8, keys=swap(KEYS))
    assert link.receive(wire.Ack(b"R" * 8, 5, 0, 0), 0.0) == []
    assert link.receive(wire.Ack(b"R" * 8, 2**64 - 1, 0, 0), 0.0) == []  # no 2**64-bit integer
    assert link.highest_pn == 2**64 - 1
    assert link.receive(wire.Ack(b"R" * 8, 5, 0, 0), 0.0) is None  # far behind: a replay
    assert link.receive(wire.Ack(b"R" * 8, 2**64 - 2, 0, 0), 0.0) == []
    assert link.receive(wire.Ack(b"R" * 8, 2**64 - 2, 0, 0), 0.0) is None


def _two_packets_in_flight() -> Link:
    link = Link(b"S" * 8, keys=KEYS)
    link.send(b"first")
    link.datagrams_to_send(0.0)
    link.send(b"second")
    link.datagrams_to_send(0.0)
    assert link.in_flight == 2
    return link


def test_an_ack_of_new_data_resets_the_backoff() -> None:
    link = _two_packets_in_flight()
    first_rto = link.rtt.rto
    now = 0.0
    for _ in range(6):  # nothing acknowledged: each wait is longer than the one before
        timer = link.next_timer()
        assert timer is not None
        now = timer
        assert len(link.datagrams_to_send(now)) == 2
    waited = link.next_timer()
    assert waited is not None and waited - now > 2 * first_rto
    # RFC 9002 6.2.1: the peer acknowledges the first packet; the second waits one RTO again.
    assert link.receive(wire.Ack(b"S" * 8, 0, 1, 0), now + 0.001) == []
    timer = link.next_timer()
    assert timer is not None and timer <= now + link.rtt.rto


def test_the_link_gives_up_only_after_retransmissions_in_vain() -> None:
    link = _two_packets_in_flight()
    limit = link.config.max_retransmissions

    def retransmit(times: int) -> float:
        now = 0.0
        for _ in range(times):
            timer = link.next_timer()
            assert timer is not None
            now = timer
            link.handle_timer(now)
            assert not link.dead
            link.datagrams_to_send(now)
        return now

    now = retransmit(limit - 1)
    assert link.receive(wire.Ack(b"S" * 8, 0, 1, 0), now) == []  # the peer is alive
    retransmit(limit)  # the second packet: as many again, all in vain
    timer = link.next_timer()
    assert timer is not None
    link.handle_timer(timer)
    assert link.dead


def test_the_backoff_stops_growing_long_before_a_float_overflows() -> None:
    """The relay's links never give up by count: a peer that pings but never acknowledges
    drives the retransmission count past 1,751, where 1.5**n overflowed."""
    link = Link(b"S" * 8, LinkConfig(max_retransmissions=10**9), keys=KEYS)
    assert link._backoff(10**6) == link.config.max_rto
    assert link._backoff(0) <= link.config.max_rto


@pytest.mark.parametrize("hint", [None, 0.05])
def test_a_first_timeout_before_any_sample_grows_an_assumed_estimate_once(
    hint: float | None,
) -> None:
    """protocol.md 5.5: two packets time out together on the assumed 100 ms: the estimate
    grows once (by BACKOFF), and their further retries leave it; a handshake's estimate
    (the hint) is a measurement and never grows. /stats shows the estimate in use."""
    link = Link(b"S" * 8, keys=KEYS, rtt_hint=hint)
    for text in (b"first", b"second"):
        link.send(text)
        link.datagrams_to_send(0.0)
    start = link.rtt.srtt
    now = 0.0
    for _ in range(3):
        timer = link.next_timer()
        assert timer is not None
        now = timer
        assert len(link.datagrams_to_send(now)) == 2
    grown = start * link.config.backoff if hint is None else start
    assert link.rtt.srtt == pytest.approx(grown)
    assert link.stats.srtt == pytest.approx(grown)
