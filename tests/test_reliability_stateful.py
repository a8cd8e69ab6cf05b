"""A rule-based state machine: hypothesis plays the network, one datagram at a time."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.fakeclient import random_keys, swap
from udpchat import wire
from udpchat.link import Link, LinkConfig, SendBufferFull

pytestmark = pytest.mark.unit


class LinkMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        config = LinkConfig(max_retransmissions=10_000)
        self.now = 0.0
        keys = random_keys(2)
        self.a = Link(b"A" * 8, config, keys=keys)
        self.b = Link(b"B" * 8, config, keys=swap(keys))
        self.sent: list[bytes] = []
        self.delivered: list[bytes] = []
        self.to_b: list[bytes] = []  # datagrams on the wire from A to B
        self.to_a: list[bytes] = []

    def _flush(self) -> None:
        self.to_b.extend(self.a.datagrams_to_send(self.now))
        self.to_a.extend(self.b.datagrams_to_send(self.now))

    def _deliver(self, link: Link, data: bytes) -> list[bytes]:
        datagram = wire.decode_datagram(data)
        assert isinstance(datagram, wire.Protected)
        return link.receive_sealed(datagram, self.now) or []

    @rule(message=st.binary(min_size=1, max_size=2500))
    def send(self, message: bytes) -> None:
        try:
            self.a.send(message)
        except SendBufferFull:
            return
        self.sent.append(message)
        self._flush()

    @precondition(lambda self: self.to_b)
    @rule(data=st.data())
    def deliver_to_b(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.to_b) - 1))  # any order: reordering
        self.delivered.extend(self._deliver(self.b, self.to_b.pop(i)))
        self._flush()

    @precondition(lambda self: self.to_a)
    @rule(data=st.data())
    def deliver_to_a(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.to_a) - 1))
        self._deliver(self.a, self.to_a.pop(i))
        self._flush()

    @precondition(lambda self: self.to_b or self.to_a)
    @rule(data=st.data(), towards_b=st.booleans())
    def drop(self, data: st.DataObject, towards_b: bool) -> None:
        queue = self.to_b if towards_b and self.to_b else self.to_a or self.to_b
        queue.pop(data.draw(st.integers(0, len(queue) - 1)))

    @precondition(lambda self: self.to_b)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self.to_b.append(self.to_b[data.draw(st.integers(0, len(self.to_b) - 1))])

    @rule(dt=st.floats(0.0001, 2.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.a.handle_timer(self.now)
        self.b.handle_timer(self.now)
        self._flush()

    @invariant()
    def delivered_is_a_prefix_of_sent(self) -> None:
        assert self.delivered == self.sent[: len(self.delivered)]

    @invariant()
    def buffers_are_bounded(self) -> None:
        for link in (self.a, self.b):
            assert link.in_flight <= wire.WINDOW
            assert len(link._buffer) < wire.WINDOW
        assert len(self.to_b) + len(self.to_a) < 10_000

    def teardown(self) -> None:
        # Heal the network: deliver everything, tick timers, until both sides are quiet.
        for _ in range(10_000):
            if self.a.idle and not self.to_b and not self.to_a:
                break
            while self.to_b or self.to_a:
                if self.to_b:
                    self.delivered.extend(self._deliver(self.b, self.to_b.pop(0)))
                if self.to_a:
                    self._deliver(self.a, self.to_a.pop(0))
                self._flush()
            self.tick(1.0)
        assert self.a.idle
        assert self.delivered == self.sent


TestLinkMachine = LinkMachine.TestCase
TestLinkMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
