"""The serving loop on a fake endpoint and a fake transport: batches, timers, calls from other
threads, faults and stopping.

The fake transport is a queue of datagrams with ``wake``; the fake endpoint records what it
was given and answers with what a test tells it to. Real threads, no sockets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import pytest

import udpchat.driver
from tests.e2e_support import wait_until
from udpchat import faults
from udpchat.driver import MAX_BATCH, READ_AHEAD, Driver
from udpchat.endpoint import Address
from udpchat.inbox import Inbox
from udpchat.link import ASAP

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]  # real threads and clock

PEER: Address = ("127.0.0.1", 9000)
STRANGER: Address = ("127.0.0.1", 9001)
log = logging.getLogger("udpchat.test")


class FakeTransport:
    """Datagrams queued by the test; ``recvfrom`` waits on a condition that ``wake`` and
    ``close`` end, as a socket with a wake-up pipe does."""

    local_address: Address = ("127.0.0.1", 5000)

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._woken = False
        self.closed = False
        self.sent: list[tuple[bytes, Address]] = []
        self.waits: list[float | None] = []
        self.refuse: int | None = None  # errno of every send, when set

    def put(self, data: bytes, addr: Address = PEER) -> None:
        with self._cond:
            self._queue.append((data, addr))
            self._cond.notify_all()

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.refuse is not None:
            raise OSError(self.refuse, "refused")
        with self._cond:
            self.sent.append((data, addr))

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        with self._cond:
            if timeout is not None:
                self.waits.append(timeout)
            end = None if timeout is None else time.monotonic() + timeout
            while not self._queue and not self._woken and not self.closed:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            if self._queue:
                return self._queue.popleft()
            self._woken = False
            return None

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class FakeEndpoint:
    """Echoes every datagram back to its sender; fires a timer when told to; records turns."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address, float]] = []
        self.outbox: list[tuple[bytes, Address]] = []
        self.timer: float | None = None
        self.timers_run: list[float] = []
        self.output_calls = 0
        self.events: list[str] = []
        self.fail_on: bytes | None = None
        self.done = False

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if data == self.fail_on:
            raise RuntimeError("a bug in the core")
        self.received.append((data, addr, now))
        self.outbox.append((b"echo " + data, addr))
        self.events.append(f"got {data.decode()}")

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        self.output_calls += 1
        out, self.outbox = self.outbox, []
        return out

    def next_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        if self.timer is not None and now >= self.timer:
            self.timer = None
            self.timers_run.append(now)
            self.outbox.append((b"tick", PEER))
            self.events.append("tick")


class Harness:
    def __init__(
        self, peer: Address | None = None, urgent: Callable[[bytes], bool] | None = None
    ) -> None:
        self.endpoint = FakeEndpoint()
        self.transport = FakeTransport()
        self.delivered: list[str] = []
        self.delivering_threads: set[str] = set()
        self.batches = 0
        self.exit: list[BaseException | None] = []
        self.driver: Driver[str] = Driver(
            self.endpoint,
            self.transport,
            label="FakeEndpoint",
            log=log,
            name="test-driver",
            take=self._take,
            deliver=self._deliver,
            finished=lambda: self.endpoint.done,
            on_exit=self.exit.append,
            peer=peer,
            urgent=urgent,
        )

    def _take(self, now: float) -> list[str]:
        events, self.endpoint.events = self.endpoint.events, []
        return events

    def _deliver(self, items: list[str]) -> None:
        assert items, "the driver hands out only when there is something"
        self.batches += 1
        self.delivering_threads.add(threading.current_thread().name)
        self.delivered.extend(items)

    def wait(self, condition: object, timeout: float = 5.0) -> bool:
        assert callable(condition)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.driver.lock:
                if condition():
                    return True
            time.sleep(0.002)
        return False


# The loop's idle wait, long here: a loop that ends or wakes within the seconds a test
# allows was woken, not timed out.
LONG_IDLE = 30.0


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setattr(udpchat.driver, "IDLE_WAIT", LONG_IDLE)
    h = Harness()
    yield h
    h.driver.stop()
    h.driver.join()


def test_a_queued_burst_is_taken_in_one_bounded_batch_and_flushed_once(harness: Harness) -> None:
    for i in range(MAX_BATCH + 10):
        harness.transport.put(f"{i}".encode())
    harness.driver.start()
    assert harness.wait(lambda: len(harness.transport.sent) == MAX_BATCH + 10)
    first_turn = harness.endpoint.received[:MAX_BATCH]
    assert len({now for _, _, now in first_turn}) == 1  # one batch, one clock reading
    assert harness.endpoint.received[MAX_BATCH][2] > first_turn[0][2]  # the rest: later
    # In order, and echoed in order: output left once per batch, not per datagram.
    assert [d for d, _ in harness.transport.sent] == [
        b"echo " + f"{i}".encode() for i in range(MAX_BATCH + 10)
    ]
    assert harness.delivered == [f"got {i}" for i in range(MAX_BATCH + 10)]
    assert harness.driver.received == MAX_BATCH + 10


def test_the_loop_sleeps_until_the_next_timer_and_runs_it(harness: Harness) -> None:
    deadline = harness.endpoint.timer = time.monotonic() + 0.1
    harness.driver.start()
    assert harness.wait(lambda: bool(harness.endpoint.timers_run), 2)
    assert harness.endpoint.timers_run[0] >= deadline
    assert harness.transport.sent == [(b"tick", PEER)]
    assert harness.delivered == ["tick"]
    assert harness.transport.waits[0] <= 0.1  # not the idle wait


def test_without_a_timer_the_loop_waits_no_longer_than_the_idle_wait(harness: Harness) -> None:
    harness.driver.start()
    assert harness.wait(lambda: len(harness.transport.waits) >= 1)
    assert harness.transport.waits[0] == LONG_IDLE


def test_a_call_runs_under_the_lock_sends_on_the_caller_and_hands_out_at_once(
    harness: Harness,
) -> None:
    harness.driver.start()
    assert harness.wait(lambda: len(harness.transport.waits) >= 1)  # asleep, IDLE_WAIT

    def act(now: float) -> int:
        harness.endpoint.outbox.append((b"said", PEER))
        harness.endpoint.events.append("said")
        return 7

    assert harness.driver.call(act) == 7
    # Before the call returned: the datagram is out and the event handed out, here.
    assert harness.transport.sent == [(b"said", PEER)]
    assert harness.delivered == ["said"]
    assert threading.current_thread().name in harness.delivering_threads


def test_a_call_that_brings_the_timer_forward_wakes_the_loop_promptly(harness: Harness) -> None:
    harness.driver.start()
    assert harness.wait(lambda: len(harness.transport.waits) >= 1)  # asleep for LONG_IDLE

    def soon(now: float) -> None:
        harness.endpoint.timer = now + 0.01

    harness.driver.call(soon)
    assert harness.wait(lambda: bool(harness.endpoint.timers_run), 5)  # woken, not timed out


class AlarmTransport(FakeTransport):
    """A fake transport with ``wake_at``: its waits also end at the alarm, if one is set."""

    def __init__(self) -> None:
        super().__init__()
        self.alarm: float | None = None
        self.alarms: list[float | None] = []
        self.wakes = 0

    def wake_at(self, when: float | None) -> None:
        with self._cond:
            self.alarm = when
            self.alarms.append(when)
            self._cond.notify_all()

    def wake(self) -> None:
        self.wakes += 1
        super().wake()

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        with self._cond:
            if timeout is not None:
                self.waits.append(timeout)
            end = None if timeout is None else time.monotonic() + timeout
            while not self._queue and not self._woken and not self.closed:
                now = time.monotonic()
                if self.alarm is not None and now >= self.alarm:
                    self.alarm = None
                    return None
                ends = [t for t in (end, self.alarm) if t is not None]
                if end is not None and now >= end:
                    return None
                self._cond.wait(min(ends) - now if ends else None)
            if self._queue:
                return self._queue.popleft()
            self._woken = False
            return None


@pytest.fixture
def alarmed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setattr(udpchat.driver, "IDLE_WAIT", LONG_IDLE)
    h = Harness()
    h.transport = h.driver.transport = AlarmTransport()
    yield h
    h.driver.stop()
    h.driver.join()


def test_a_call_that_brings_the_timer_forward_sets_the_alarm_instead_of_waking(
    alarmed: Harness,
) -> None:
    transport = alarmed.transport
    assert isinstance(transport, AlarmTransport)
    alarmed.driver.start()
    assert alarmed.wait(lambda: len(transport.waits) >= 1)  # asleep for LONG_IDLE
    deadline = 0.0

    def soon(now: float) -> None:
        nonlocal deadline
        deadline = alarmed.endpoint.timer = now + 0.05

    alarmed.driver.call(soon)
    assert transport.alarms == [deadline] and transport.wakes == 0
    assert len(transport.waits) == 1  # no turn until then: the loop slept on
    assert alarmed.wait(lambda: bool(alarmed.endpoint.timers_run), 5)  # at the alarm
    assert alarmed.endpoint.timers_run[0] >= deadline


def test_a_call_that_pushes_the_timer_later_sets_no_alarm(alarmed: Harness) -> None:
    transport = alarmed.transport
    assert isinstance(transport, AlarmTransport)
    alarmed.endpoint.timer = time.monotonic() + 0.5
    alarmed.driver.start()
    assert alarmed.wait(lambda: len(transport.waits) >= 1)

    def later(now: float) -> None:
        alarmed.endpoint.timer = now + 1.0

    alarmed.driver.call(later)
    assert transport.alarms == [] and transport.wakes == 0


def test_a_datagram_before_the_alarm_makes_the_loop_forget_it(alarmed: Harness) -> None:
    transport = alarmed.transport
    assert isinstance(transport, AlarmTransport)
    alarmed.driver.start()
    assert alarmed.wait(lambda: len(transport.waits) >= 1)

    def soon(now: float) -> None:
        alarmed.endpoint.timer = now + 10.0

    alarmed.driver.call(soon)
    transport.put(b"answer")
    assert alarmed.wait(lambda: transport.alarms[-1:] == [None])  # the loop's own wait covers it
    assert alarmed.endpoint.timers_run == []


def test_a_call_from_another_thread_while_the_loop_delivers_keeps_the_order(
    harness: Harness,
) -> None:
    """The loop's thread is inside ``deliver`` when a caller emits: the caller leaves its
    items to it, and they come out after the loop's, exactly once."""
    inside = threading.Event()
    release = threading.Event()
    original = harness._deliver

    def slow_deliver(items: list[str]) -> None:
        if "got first" in items:
            inside.set()
            release.wait(5)
        original(items)

    harness.driver._deliver = slow_deliver
    harness.driver.start()
    harness.transport.put(b"first")
    assert inside.wait(5)

    def act(now: float) -> None:
        harness.endpoint.events.append("from the caller")

    harness.driver.call(act)  # returns at once: the loop's thread hands out
    assert "from the caller" not in harness.delivered
    release.set()
    assert harness.wait(lambda: "from the caller" in harness.delivered)
    assert harness.delivered == ["got first", "from the caller"]


def test_an_exception_in_the_core_is_counted_and_the_datagram_dropped(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(faults.STRICT_ENV, raising=False)
    harness.endpoint.fail_on = b"bad"
    harness.driver.start()
    with caplog.at_level(logging.ERROR, logger="udpchat.test"):
        for data in (b"bad", b"good", b"bad", b"after"):
            harness.transport.put(data)
        assert harness.wait(lambda: len(harness.endpoint.received) == 2)
    assert [d for d, _, _ in harness.endpoint.received] == [b"good", b"after"]
    assert harness.driver.internal_errors == 2
    assert [(f.where, f.kind) for f in faults.take()] == [
        ("FakeEndpoint.receive_datagram", "RuntimeError")
    ] * 2
    assert len([r for r in caplog.records if r.exc_info]) <= 1  # logged once at most
    assert harness.driver.started and not harness.exit


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_in_strict_mode_an_exception_in_the_core_ends_the_loop_with_it(harness: Harness) -> None:
    assert faults.strict()
    harness.endpoint.fail_on = b"bad"
    harness.driver.start()
    harness.transport.put(b"bad")
    assert harness.wait(lambda: bool(harness.exit))
    assert isinstance(harness.exit[0], RuntimeError)
    assert harness.driver.internal_errors == 1
    assert [f.kind for f in faults.take()] == ["RuntimeError"]


def test_a_refused_send_loses_one_datagram_and_is_counted_by_errno(harness: Harness) -> None:
    harness.transport.refuse = 1  # EPERM, as a firewall says it
    harness.driver.start()
    harness.transport.put(b"x")
    harness.transport.put(b"y")
    assert harness.wait(lambda: harness.driver.send_errors_by_errno.get(1) == 2)
    assert harness.exit == []


def test_stop_ends_the_loop_promptly_after_a_last_flush(harness: Harness) -> None:
    harness.driver.start()
    assert harness.wait(lambda: len(harness.transport.waits) >= 1)  # asleep for LONG_IDLE
    harness.driver.stop()
    harness.driver.join(5)
    assert harness.exit == [None]  # ended: woken, not timed out
    assert not harness.driver.wait_for(lambda: False, 5)  # returns at once once stopped


def test_a_finished_endpoint_ends_the_loop_and_wakes_waiters(harness: Harness) -> None:
    harness.driver.start()
    assert harness.wait(lambda: len(harness.transport.waits) >= 1)
    waited: list[bool] = []
    waiter = threading.Thread(
        target=lambda: waited.append(harness.driver.wait_for(lambda: False, 10))
    )
    waiter.start()

    def finish(now: float) -> None:
        harness.endpoint.done = True

    harness.driver.call(finish)  # wakes the sleeping loop: it ends now
    harness.driver.join(5)
    waiter.join(5)
    assert harness.exit == [None] and waited == [False]  # woken, not timed out


def test_only_the_peer_speaks_for_a_connected_endpoint() -> None:
    h = Harness(peer=PEER)
    h.driver.start()
    try:
        h.transport.put(b"stranger", STRANGER)
        h.transport.put(b"peer", PEER)
        assert h.wait(lambda: len(h.endpoint.received) == 1)
        assert [d for d, _, _ in h.endpoint.received] == [b"peer"]
        assert h.driver.received == 1
    finally:
        h.driver.stop()
        h.driver.join()


def test_the_peer_filter_follows_the_shell_when_it_moves() -> None:
    """A client that moved to another relay (protocol.md 6.9) hears that one alone."""
    h = Harness(peer=PEER)
    h.driver.start()
    try:
        h.transport.put(b"old", PEER)
        assert h.wait(lambda: len(h.endpoint.received) == 1)
        with h.driver.lock:
            h.driver.peer = STRANGER
        h.transport.put(b"left behind", PEER)
        h.transport.put(b"new", STRANGER)
        assert h.wait(lambda: len(h.endpoint.received) == 2)
        assert [d for d, _, _ in h.endpoint.received] == [b"old", b"new"]
    finally:
        h.driver.stop()
        h.driver.join()


class CountingInbox(Inbox):
    """An inbox that counts what is put in it."""

    __slots__ = ("puts",)

    def __init__(self, max_bytes: int, urgent: Callable[[bytes], bool] | None = None) -> None:
        super().__init__(max_bytes, urgent)
        self.puts = 0

    def put(self, data: bytes, addr: Address) -> None:
        self.puts += 1
        super().put(data, addr)


def test_a_datagram_that_comes_alone_skips_the_inbox_and_the_peer_filter_holds() -> None:
    """A quiet endpoint's every turn: one datagram, nothing behind it. It goes to the
    endpoint as it is (a stranger's is dropped all the same); a burst goes through the inbox."""
    h = Harness(peer=PEER)
    inbox = h.driver._inbox = CountingInbox(udpchat.driver.READ_AHEAD_BYTES)
    h.driver.start()
    try:
        for data, addr in [(b"who?", STRANGER), (b"one", PEER), (b"me!", STRANGER), (b"two", PEER)]:
            looked = len(h.transport.waits)
            h.transport.put(data, addr)
            # back asleep: the datagram was taken and its turn is over
            assert h.wait(lambda looked=looked: len(h.transport.waits) >= looked + 2)
        assert [d for d, _, _ in h.endpoint.received] == [b"one", b"two"]
        assert h.transport.sent == [(b"echo one", PEER), (b"echo two", PEER)]
        assert h.driver.received == 2 and inbox.puts == 0
        with h.driver.lock:  # a burst: read into the inbox, strangers left out
            for i in range(3):
                h.transport.put(b"burst %d" % i, PEER)
                h.transport.put(b"noise", STRANGER)
        assert h.wait(lambda: len(h.endpoint.received) == 5)
        assert [d for d, _, _ in h.endpoint.received][2:] == [b"burst 0", b"burst 1", b"burst 2"]
        assert inbox.puts >= 2
    finally:
        h.driver.stop()
        h.driver.join()


def test_urgent_datagrams_of_a_batch_go_first_each_kind_in_order_of_arrival() -> None:
    h = Harness(urgent=lambda data: data.startswith(b"hello"))
    arrivals = [b"a", b"hello 1", b"b", b"c", b"hello 2", b"d"]
    for data in arrivals:
        h.transport.put(data)
    h.driver.start()
    try:
        assert h.wait(lambda: len(h.endpoint.received) == len(arrivals))
        assert [d for d, _, _ in h.endpoint.received] == [
            b"hello 1",
            b"hello 2",
            b"a",
            b"b",
            b"c",
            b"d",
        ]
        # and their answers leave first
        assert [d for d, _ in h.transport.sent][:2] == [b"echo hello 1", b"echo hello 2"]
    finally:
        h.driver.stop()
        h.driver.join()


def test_a_turn_reads_at_most_read_ahead_datagrams() -> None:
    """The datagram the loop woke with counts: a turn reads READ_AHEAD in all, the rest waits
    in the socket (the kernel's buffer) for the next turn."""
    h = Harness()
    total = READ_AHEAD + 50
    for i in range(total):
        h.transport.put(f"{i}".encode())
    got = h.transport.recvfrom(1.0)  # as the loop wakes: one datagram in hand
    h.driver._turn(got, 0.0, None)  # one turn, on this thread (the loop is not started)
    assert total - len(h.transport._queue) == READ_AHEAD
    assert [d for d, _, _ in h.endpoint.received] == [f"{i}".encode() for i in range(MAX_BATCH)]


def test_a_flood_from_strangers_still_ends_the_batch() -> None:
    h = Harness(peer=PEER)
    for _ in range(READ_AHEAD + MAX_BATCH):
        h.transport.put(b"stranger", STRANGER)
    h.transport.put(b"timer's turn", PEER)
    h.endpoint.timer = 0.0  # due at once: it runs after the first bounded batch
    h.driver.start()
    try:
        assert h.wait(lambda: len(h.endpoint.received) == 1)
        assert h.endpoint.timers_run  # the timer did not wait for the whole flood
        assert h.endpoint.received[0][2] > h.endpoint.timers_run[0]
    finally:
        h.driver.stop()
        h.driver.join()


def test_an_urgent_datagram_behind_a_long_queue_is_taken_in_the_first_turn() -> None:
    h = Harness(urgent=lambda data: data.startswith(b"hello"))
    for i in range(3 * MAX_BATCH):
        h.transport.put(f"{i}".encode())
    h.transport.put(b"hello late")
    h.driver.start()
    try:
        assert h.wait(lambda: len(h.endpoint.received) == 3 * MAX_BATCH + 1)
        received = [d for d, _, _ in h.endpoint.received]
        assert received[0] == b"hello late"
        assert received[1:] == [f"{i}".encode() for i in range(3 * MAX_BATCH)]
    finally:
        h.driver.stop()
        h.driver.join()


class SlicedEndpoint(FakeEndpoint):
    """A fake relay: one datagram makes a fan-out of ``fanout`` datagrams, handed out in
    slices as ``datagrams_to_send(now, limit)`` does; answers to the others go first, as
    the relay's handshake answers do."""

    def __init__(self, fanout: int) -> None:
        super().__init__()
        self.fanout = fanout

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if data == b"fan out":
            self.outbox.extend((f"copy {i}".encode(), addr) for i in range(self.fanout))
            return
        self.received.append((data, addr, now))
        self.outbox.insert(0, (b"echo " + data, addr))

    def datagrams_to_send(  # type: ignore[override]
        self, now: float, limit: int | None = None
    ) -> list[tuple[bytes, Address]]:
        self.output_calls += 1
        cut = len(self.outbox) if limit is None else limit
        out, self.outbox = self.outbox[:cut], self.outbox[cut:]
        return out

    def next_timer(self) -> float | None:
        return float("-inf") if self.outbox else self.timer


def test_a_sliced_fan_out_stops_for_a_handshake_that_arrives_meanwhile() -> None:
    endpoint = SlicedEndpoint(fanout=10 * MAX_BATCH)
    transport = FakeTransport()

    def sendto(data: bytes, addr: Address) -> None:
        transport.sent.append((data, addr))
        if len(transport.sent) == MAX_BATCH:  # the first slice is out: a joiner arrives
            transport.put(b"hello")

    transport.sendto = sendto  # type: ignore[method-assign]
    driver: Driver[str] = Driver(
        endpoint,
        transport,
        label="SlicedEndpoint",
        log=log,
        name="test-driver",
        take=lambda now: [],
        deliver=lambda items: None,
        send_batch=MAX_BATCH,
        urgent=lambda data: data.startswith(b"hello"),
    )
    transport.put(b"fan out")
    driver.start()
    try:
        end = time.monotonic() + 5
        while time.monotonic() < end and len(transport.sent) < 10 * MAX_BATCH + 1:
            time.sleep(0.002)
        sent = [d for d, _ in transport.sent]
        assert len(sent) == 10 * MAX_BATCH + 1
        # the echo of the HELLO left right after the slice during which it arrived
        assert sent.index(b"echo hello") == MAX_BATCH
        assert [d for d in sent if d != b"echo hello"] == [
            f"copy {i}".encode() for i in range(10 * MAX_BATCH)
        ]
    finally:
        driver.stop()
        driver.join()



def test_a_handshake_s_answer_leaves_in_a_small_slice_before_timers_run() -> None:
    """An urgent datagram's answer is sent before the turn's timers run and before the rest
    of the output is encoded, even when no other datagram came with it."""
    endpoint = SlicedEndpoint(fanout=0)
    transport = FakeTransport()
    order: list[str] = []
    handle_timer = endpoint.handle_timer

    def timer_run(now: float) -> None:
        order.append("timers")
        handle_timer(now)

    def sendto(data: bytes, addr: Address) -> None:
        transport.sent.append((data, addr))
        order.append(f"sent {data.decode()}")

    endpoint.handle_timer = timer_run  # type: ignore[method-assign]
    transport.sendto = sendto  # type: ignore[method-assign]
    endpoint.outbox = [(f"queued {i}".encode(), PEER) for i in range(3)]
    driver: Driver[str] = Driver(
        endpoint,
        transport,
        label="SlicedEndpoint",
        log=log,
        name="test-driver",
        take=lambda now: [],
        deliver=lambda items: None,
        send_batch=MAX_BATCH,
        urgent=lambda data: data.startswith(b"hello"),
    )
    endpoint.timer = 0.0  # due at once
    transport.put(b"hello")
    driver.start()
    try:
        assert wait_until(lambda: len(transport.sent) >= 5, 5, interval=0.002)
        # two datagrams for one urgent one (an ACCEPT and its WELCOME), then the timers
        assert order[:3] == ["sent echo hello", "sent queued 0", "timers"]
        assert [d for d, _ in transport.sent][2:] == [b"queued 1", b"queued 2", b"tick"]
    finally:
        driver.stop()
        driver.join()


def test_a_call_that_leaves_work_due_at_once_wakes_the_loop(alarmed: Harness) -> None:
    """ASAP (-inf) is no time an alarm can be set for: the loop is woken, and runs it."""
    transport = alarmed.transport
    assert isinstance(transport, AlarmTransport)
    alarmed.driver.start()
    assert alarmed.wait(lambda: len(transport.waits) >= 1)

    def at_once(now: float) -> None:
        alarmed.endpoint.timer = ASAP

    alarmed.driver.call(at_once)
    assert transport.alarms == [] and transport.wakes == 1
    assert alarmed.wait(lambda: bool(alarmed.endpoint.timers_run), 5)
