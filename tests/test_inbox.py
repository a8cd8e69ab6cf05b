"""The driver's inbox: bounded in bytes, urgent datagrams first, each kind in order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpchat.endpoint import Address
from udpchat.inbox import OVERHEAD, Inbox

pytestmark = pytest.mark.unit

PEER: Address = ("127.0.0.1", 9000)


def urgent(data: bytes) -> bool:
    return data.startswith(b"!")


Taken = tuple[list[tuple[bytes, Address]], list[tuple[bytes, Address]]]


def names(taken: Taken) -> tuple[list[bytes], list[bytes]]:
    first, then = taken
    return [d for d, _ in first], [d for d, _ in then]


def test_urgent_datagrams_are_taken_first_each_kind_in_order_of_arrival() -> None:
    inbox = Inbox(1 << 20, urgent)
    for data in (b"a", b"!1", b"b", b"!2", b"c"):
        inbox.put(data, PEER)
    assert inbox.urgent_waiting
    assert names(inbox.take(2)) == ([b"!1", b"!2"], [b"a", b"b"])
    assert not inbox.urgent_waiting
    assert names(inbox.take(2)) == ([], [b"c"])
    assert len(inbox) == 0 and inbox.bytes == 0


def test_a_turn_takes_at_most_the_limit_of_each_kind() -> None:
    inbox = Inbox(1 << 20, urgent)
    for i in range(5):
        inbox.put(b"!%d" % i, PEER)
        inbox.put(b"%d" % i, PEER)
    assert names(inbox.take(3)) == ([b"!0", b"!1", b"!2"], [b"0", b"1", b"2"])
    assert len(inbox) == 4


def test_without_a_test_of_urgency_everything_keeps_its_order() -> None:
    inbox = Inbox(1 << 20)
    for data in (b"a", b"!1", b"b"):
        inbox.put(data, PEER)
    assert names(inbox.take(10)) == ([], [b"a", b"!1", b"b"])


def test_tiny_datagrams_fill_it_by_their_overhead() -> None:
    inbox = Inbox(10 * OVERHEAD)
    for _ in range(9):
        inbox.put(b"", PEER)
        assert not inbox.full
    inbox.put(b"", PEER)
    assert inbox.full


def test_it_holds_at_least_a_byte() -> None:
    with pytest.raises(ValueError):
        Inbox(0)


@given(st.lists(st.binary(max_size=8), max_size=50), st.integers(1, 8))
def test_every_datagram_comes_out_once_and_the_byte_count_returns_to_zero(
    items: list[bytes], limit: int
) -> None:
    inbox = Inbox(1 << 20, urgent)
    for data in items:
        inbox.put(data, PEER)
    out: list[bytes] = []
    while len(inbox):
        first, then = names(inbox.take(limit))
        out.extend(first + then)
    assert sorted(out) == sorted(items)
    assert [d for d in out if urgent(d)] == [d for d in items if urgent(d)]
    assert [d for d in out if not urgent(d)] == [d for d in items if not urgent(d)]
    assert inbox.bytes == 0
