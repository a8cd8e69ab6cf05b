"""What a peer can make a link hold: out-of-order packets and reassembly, bounded in bytes as
CPython spends them, per link and across all the links of a relay (protocol.md 5.1, 5.8)."""

from __future__ import annotations

import gc
import random
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakeclient import FakeClient, random_keys, swap
from tests.linknode import LinkNode
from udpchat import link as link_package
from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.budget import ReceiveBudget
from udpchat.link import OVERSIZED_PREFIX, Link, LinkConfig
from udpchat.link.reorder import ReorderBuffer
from udpchat.memory import give_back_free_memory
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.seal import SESSION_ENVELOPE
from udpchat.sim import PathModel, SimNetwork

pytestmark = pytest.mark.unit

TOKEN = b"R" * 8
A = ("10.0.0.1", 1)
B = ("10.0.0.2", 2)
RELAY = ("127.0.0.1", 9000)

KEYS = random_keys(7)


def encode_data(
    token: bytes, pn: int, ack: int, ack_bits: int, seq: int, more: bool, chunks: list[bytes]
) -> wire.Data:
    """A DATA as a receiver sees it once opened (protocol.md 5, 8)."""
    return wire.Data(token, pn, ack, ack_bits, seq, int(more), tuple(chunks))


def sealed(link: Link, data: wire.Data) -> bytes:
    """``data`` sealed as ``link``'s peer would send it."""
    chunks = list(data.chunks)
    fields = session_bytes.data_fields(data.ack, data.ack_bits, data.seq, data.flags, chunks)
    return link._cipher.seal(wire.DatagramType.DATA, data.token, data.pn, fields)


def out_of_order_attack(token: bytes, chunk_size: int, first_pn: int = 0) -> list[wire.Data]:
    """A full window of DATA packets, all but the first, each packed with as many chunks of
    ``chunk_size`` bytes as the rules allow: what a peer sends to make a receiver hold the
    most objects for the fewest bytes."""
    header = len(session_bytes.data_fields(0, 0, wire.WINDOW, 0, [])) + SESSION_ENVELOPE
    per_chunk = chunk_size + (2 if chunk_size < 256 else 3)
    count = max(1, min(wire.MAX_CHUNKS, (wire.MAX_DATAGRAM_SIZE - header) // per_chunk))
    out = []
    for seq in range(1, wire.WINDOW):
        chunks = [bytes([seq % 256, i % 256]) * (chunk_size // 2) for i in range(count)]
        out.append(encode_data(token, first_pn + seq, 0, 0, seq, False, chunks))
    return out


def feed(link: Link, datagrams: list[wire.Data], now: float = 0.0) -> list[bytes]:
    delivered: list[bytes] = []
    for datagram in datagrams:
        delivered.extend(link.receive(datagram, now) or [])
    return delivered


def held_by_hand(link: Link) -> int:
    """The accounting recomputed from the objects the link keeps for what it received."""
    held = link._buffer
    objects = [held._store, held._offsets] if len(held) else []
    if link._partial:
        objects.append(link._partial)
    return sum(map(sys.getsizeof, objects))


# --- bounded per link and in total ------------------------------------------------------------


def test_tiny_chunk_attack_is_bounded_per_link_in_accounted_and_real_bytes() -> None:
    attack = out_of_order_attack(TOKEN, 2)
    feed(
        Link(TOKEN, keys=swap(KEYS)), attack
    )  # once first, so that one-time caches are not counted
    link = Link(TOKEN, keys=swap(KEYS))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        assert feed(link, attack) == []
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(ours), after.filter_traces(ours)
    grown = [stat for stat in after.compare_to(before, "lineno") if stat.size_diff > 0]
    traced = sum(stat.size_diff for stat in grown)
    link_dir = Path(link_package.__file__).parent
    link_files = {str(path) for path in link_dir.glob("*.py")}
    blocks = [stat for stat in grown if stat.traceback[0].filename in link_files]
    accounted = link.buffered_bytes
    assert len(link._buffer) == wire.WINDOW - 1
    assert accounted == held_by_hand(link)
    assert accounted <= link.config.receive_buffer
    # The accounting covers what CPython really spends, and does not overstate it wildly.
    assert accounted / 2 <= traced <= accounted * 1.25, (traced, accounted)
    # A few blocks, not an object per chunk or per packet (the old layout: some 18,000).
    assert sum(stat.count_diff for stat in blocks) < wire.WINDOW // 4, blocks


def test_out_of_order_packets_over_the_link_cap_are_dropped_and_not_acknowledged() -> None:
    cap = 8 * 1024
    link = Link(TOKEN, LinkConfig(receive_buffer=cap), keys=swap(KEYS))
    attack = out_of_order_attack(TOKEN, 64)  # ~1.1 KB packets
    assert feed(link, attack) == []
    assert link.buffered_bytes == held_by_hand(link) <= cap
    held = sorted(link._buffer)
    assert link.stats.over_budget == len(attack) - len(held) > 0
    ack, bits = link._ack_fields()
    assert ack == 0
    assert bits == sum(1 << (seq - 1) for seq in held)  # the dropped ones are not acknowledged


def test_shared_budget_bounds_all_links_together_and_comes_back() -> None:
    budget = ReceiveBudget(256 * 1024)
    links = [Link(bytes([i]) * 8, budget=budget, keys=swap(KEYS)) for i in range(32)]
    for i, link in enumerate(links):
        feed(link, out_of_order_attack(link.token, 2 if i % 2 else 500))
    assert budget.used <= budget.limit
    assert budget.used == sum(link.buffered_bytes for link in links)
    assert sum(link.stats.over_budget for link in links) > 0
    assert all(link.buffered_bytes <= link.config.receive_buffer for link in links)
    for link in links:
        link.release_buffers()
    assert budget.used == 0
    assert all(link.buffered_bytes == 0 for link in links)


def test_in_order_packets_are_processed_even_over_budget() -> None:
    budget = ReceiveBudget(0)
    link = Link(TOKEN, LinkConfig(receive_buffer=0), budget=budget, keys=swap(KEYS))
    first = encode_data(TOKEN, 0, 0, 0, 0, True, [b"\x92\x01\xda\x00\x10" + bytes(1000)])
    second = encode_data(TOKEN, 1, 0, 0, 1, False, [b"x" * 100])
    assert feed(link, [first]) == []
    assert budget.used == link.buffered_bytes == held_by_hand(link) > 0  # the reassembly
    assert feed(link, [second]) == [b"\x92\x01\xda\x00\x10" + bytes(1000) + b"x" * 100]
    assert budget.used == link.buffered_bytes == 0
    assert link.stats.over_budget == 0


def test_relay_links_draw_on_one_budget_and_return_it_when_dropped() -> None:
    config = RelayConfig(receive_budget=100 * 1024, timeout=3.0)
    net = SimNetwork(seed=2)
    relay = RelayCore(config, 0.0, random.Random(2).randbytes)
    net.attach(RELAY, relay)
    clients = []
    for i in range(4):
        client = FakeClient(f"m{i}", RELAY, seed=i)
        net.attach(("127.0.0.1", 40000 + i), client)
        assert net.run_until(lambda c=client: c.joined, 5)  # type: ignore[misc]
        clients.append(client)
    for i, client in enumerate(clients):
        assert client.link is not None
        for data in out_of_order_attack(client.link.token, 500, first_pn=1000):
            net.inject(("127.0.0.1", 40000 + i), RELAY, sealed(client.link, data))
    net.run(0.1)
    links = [mb.link for mb in relay.members.values()]
    assert 0 < relay.receive_budget.used <= config.receive_budget
    assert relay.receive_budget.used == sum(link.buffered_bytes for link in links)
    assert sum(link.stats.over_budget for link in links) > 0
    # The clients' own datagrams now carry packet numbers far below the attack's: replays,
    # so the members fall silent and time out, and their bytes go back to the budget.
    assert net.run_until(lambda: not relay.members, 10)
    assert relay.receive_budget.used == 0


def test_held_packets_come_out_whole_and_in_order_through_compaction() -> None:
    held = ReorderBuffer(0)
    packets = {
        seq: (seq % 3 == 0, [bytes([seq]) * (seq % 7 + 1)] * (seq % 4 + 1)) for seq in range(1, 64)
    }
    for seq in [*range(60, 64), *range(1, 41)]:  # a gap from 41 to 59
        held.add(seq, *packets[seq])
    assert len(held) == 44 and 41 not in held and 60 in held
    out = [held.advance() for _ in range(40)]  # 0 was processed: 1 to 40 follow
    assert out == [packets[seq] for seq in range(1, 41)]
    assert held.advance() is None and held.base == 41  # the gap
    assert len(held._store) < 2 * held._live < 200  # dead records dropped: the 4 held stay
    for seq in range(42, 60):
        held.add(seq, *packets[seq])
    got = []
    while (packet := held.advance()) is not None:
        got.append(packet)
    assert got == [packets[seq] for seq in range(42, 64)]
    assert len(held) == 0 and held.cost() == 0
    # emptied, it holds no buffer of its own again (nor does a new one), and takes more
    assert held._store is ReorderBuffer(0)._store == b""
    held.add(held.base + 1, *packets[1])
    assert held._store and held.advance() == packets[1] and held._store == b""


# --- over budget, then delivered: retransmission does the rest --------------------------------


def test_over_budget_packets_are_retransmitted_and_delivered_once_in_order() -> None:
    net = SimNetwork(seed=11, default=PathModel(loss=0.1, reorder=0.3, delay=0.002, jitter=0.002))
    budget = ReceiveBudget(6 * 1024)
    sender = LinkNode(
        Link(b"S" * 8, LinkConfig(max_retransmissions=40, send_buffer=2**20), keys=KEYS), B
    )
    receiver = LinkNode(
        Link(TOKEN, LinkConfig(receive_buffer=4 * 1024), budget=budget, keys=swap(KEYS)), A
    )
    net.attach(A, sender)
    net.attach(B, receiver)
    rng = random.Random(3)
    messages = [rng.randbytes(rng.choice((5, 300, 1100, 5000))) + b"!" for _ in range(150)]
    for message in messages:
        sender.link.send(message)
    assert net.run_until(lambda: sender.link.idle, 60)
    assert receiver.delivered == messages
    assert receiver.link.stats.over_budget > 0
    assert receiver.link.stats.messages_delivered == len(messages)
    assert not sender.link.dead
    assert budget.used == receiver.link.buffered_bytes == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0, 0.3),
    reorder=st.floats(0, 0.5),
    link_cap=st.integers(0, 16 * 1024),
    shared=st.integers(0, 16 * 1024),
    sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=30),
)
@pytest.mark.timeout(300)
def test_tight_budgets_never_lose_reorder_or_duplicate_a_message(
    seed: int, loss: float, reorder: float, link_cap: int, shared: int, sizes: list[int]
) -> None:
    net = SimNetwork(seed=seed, default=PathModel(loss=loss, reorder=reorder, jitter=0.002))
    budget = ReceiveBudget(shared)  # both directions draw on it
    config = LinkConfig(max_retransmissions=200, receive_buffer=link_cap)
    a = LinkNode(Link(b"A" * 8, config, budget=budget, keys=KEYS), B)
    b = LinkNode(Link(b"B" * 8, config, budget=budget, keys=swap(KEYS)), A)
    net.attach(A, a)
    net.attach(B, b)
    sent = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    for message in sent:
        a.link.send(message)
        b.link.send(message)
    for _ in range(2000):
        if not net.step() or (a.link.idle and b.link.idle):
            break
        assert budget.used == a.link.buffered_bytes + b.link.buffered_bytes
        for node in (a, b):
            assert node.link.buffered_bytes == held_by_hand(node.link)
        assert b.delivered == sent[: len(b.delivered)]
        assert a.delivered == sent[: len(a.delivered)]
    net.set_default(PathModel())
    assert net.run_until(lambda: a.link.idle and b.link.idle, 300)
    assert a.delivered == sent and b.delivered == sent
    assert budget.used == 0


# --- oversized messages (protocol.md 5.1) -----------------------------------------------------


def test_oversized_message_is_delivered_as_its_first_bytes() -> None:
    text = "é" * 40_000  # 80,000 bytes of UTF-8: over MAX_MESSAGE_SIZE
    big = m.encode_message(m.Say("x")).replace(b"\xa1x", b"\xdb" + (80_000).to_bytes(4, "big"))
    big += text.encode()
    after = m.encode_message(m.Say("after"))
    pieces = [big[i : i + 1100] for i in range(0, len(big), 1100)]
    link = Link(TOKEN, LinkConfig(receive_buffer=0), keys=swap(KEYS))
    delivered: list[bytes] = []
    for seq, piece in enumerate(pieces):
        last = seq == len(pieces) - 1
        chunks = [piece, after] if last else [piece]
        data = encode_data(TOKEN, seq, 0, 0, seq, not last, chunks)
        delivered += feed(link, [data])
        assert len(link._partial) <= m.MAX_MESSAGE_SIZE
    assert delivered == [big[:OVERSIZED_PREFIX], after]
    assert link.stats.oversized == 1
    assert link.stats.messages_delivered == 2  # the prefix holds the message's place
    assert link.buffered_bytes == 0
    with pytest.raises(wire.DecodeError):
        m.decode_message(delivered[0])  # a truncated msgpack value never decodes
    assert m.decode_message(delivered[1]) == m.Say("after")


def test_released_bytes_are_counted_so_the_relay_can_give_memory_back() -> None:
    budget = ReceiveBudget(1 << 20)
    links = [Link(bytes([i]) * 8, budget=budget, keys=swap(KEYS)) for i in range(4)]
    for link in links:
        feed(link, out_of_order_attack(link.token, 500))
    held = budget.used
    assert held > 0 and budget.released == 0
    links[0].release_buffers()
    assert budget.released == held - budget.used
    assert not budget.take_released(held, 1)  # not enough yet, and something is still held
    for link in links[1:]:
        link.release_buffers()
    assert budget.used == 0 and budget.released == held
    assert budget.take_released(2 * held, held)  # all of it went: a lower bar
    assert budget.released == 0 and not budget.take_released(0, 1)
    give_back_free_memory()  # glibc's malloc_trim here; elsewhere nothing, and never an error
