"""UDP and impaired transports on loopback: delivery, big datagrams, timeouts, shutdown."""

from __future__ import annotations

import errno
import gc
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from udpchat.alarm import Alarm
from udpchat.impair import ImpairmentConfig
from udpchat.impaired import ImpairedTransport
from udpchat.transport import (
    Address,
    DatagramTransport,
    ErrorLog,
    SocketBuffers,
    UdpTransport,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(30)]


def ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def pair() -> Iterator[tuple[UdpTransport, UdpTransport]]:
    a, b = UdpTransport.bind("127.0.0.1"), UdpTransport.bind("127.0.0.1")
    yield a, b
    a.close()
    b.close()


def test_protocol_is_satisfied() -> None:
    def takes(transport: DatagramTransport) -> Address:
        return transport.local_address

    with_udp = UdpTransport.bind("127.0.0.1")
    impaired = ImpairedTransport(UdpTransport.bind("127.0.0.1"), ImpairmentConfig())
    assert takes(with_udp)[0] == "127.0.0.1"
    assert takes(impaired)[1] > 0
    with_udp.close()
    impaired.close()


def test_send_receive_ipv4(pair: tuple[UdpTransport, UdpTransport]) -> None:
    a, b = pair
    host, port = a.local_address
    assert host == "127.0.0.1" and port > 0
    a.sendto(b"hello", b.local_address)
    assert b.recvfrom(5.0) == (b"hello", a.local_address)
    assert a.counters.sent == 1 and b.counters.received == 1


@pytest.mark.skipif(not ipv6_available(), reason="IPv6 loopback unavailable")
def test_send_receive_ipv6() -> None:
    a, b = UdpTransport.bind("::1"), UdpTransport.bind("::1")
    try:
        assert a.local_address[0] == "::1"
        a.sendto(b"six", b.local_address)
        assert b.recvfrom(5.0) == (b"six", a.local_address)
    finally:
        a.close()
        b.close()


def test_large_datagram_is_not_truncated(pair: tuple[UdpTransport, UdpTransport]) -> None:
    a, b = pair
    payload = bytes(range(256)) * 234 + b"end"  # 59,907 bytes
    assert len(payload) > 59_000
    a.sendto(payload, b.local_address)
    got = b.recvfrom(5.0)
    assert got is not None and got[0] == payload


def test_timeout_returns_none(pair: tuple[UdpTransport, UdpTransport]) -> None:
    _, b = pair
    start = time.monotonic()
    assert b.recvfrom(0.1) is None
    assert 0.09 <= time.monotonic() - start < 2.0
    assert b.recvfrom(0) is None


def test_send_to_vanished_peer_is_counted_not_raised(
    pair: tuple[UdpTransport, UdpTransport],
) -> None:
    a, b = pair
    gone = UdpTransport.bind("127.0.0.1")
    address = gone.local_address
    gone.close()
    for _ in range(3):
        a.sendto(b"anyone?", address)
    a.sendto(b"still works", b.local_address)
    assert b.recvfrom(5.0) == (b"still works", a.local_address)
    assert a.recvfrom(0.05) is None


# Errors a sendto can meet on Linux for one destination alone: port 0, a local firewall,
# a policy, no route, a datagram too large for the path.
ONE_DATAGRAM_ERRORS = [
    errno.EINVAL,
    errno.EPERM,
    errno.EACCES,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EMSGSIZE,
]


def test_send_to_port_zero_is_counted_not_raised(pair: tuple[UdpTransport, UdpTransport]) -> None:
    a, b = pair
    a.sendto(b"nobody listens on port 0", ("127.0.0.1", 0))  # EINVAL on Linux
    assert a.counters.send_errors == 1 and a.counters.sent == 0
    assert set(a.counters.send_errors_by_errno) <= {errno.EINVAL}
    a.sendto(b"still works", b.local_address)
    assert b.recvfrom(5.0) == (b"still works", a.local_address)


class RefusingSocket(socket.socket):
    """A UDP socket whose sends fail with ``refuse`` (a firewall, a missing route, ...), and
    whose receives fail with ``fail_receives`` first, before it hands out datagrams."""

    refuse: int = errno.EPERM
    fail_receives: list[int]

    def sendto(self, data: object, *args: object) -> int:  # type: ignore[override]
        raise OSError(self.refuse, os.strerror(self.refuse))

    def recvfrom(self, bufsize: int, *args: object) -> tuple[bytes, object]:  # type: ignore[override]
        if self.fail_receives:
            code = self.fail_receives.pop(0)
            raise OSError(code, os.strerror(code))
        return super().recvfrom(bufsize, *args)  # type: ignore[arg-type]


def refusing_transport(fail_receives: list[int] | None = None) -> UdpTransport:
    sock = RefusingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.fail_receives = list(fail_receives or [])
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return UdpTransport(sock)


@pytest.mark.parametrize("code", ONE_DATAGRAM_ERRORS, ids=errno.errorcode.get)
def test_every_send_error_loses_one_datagram(code: int) -> None:
    transport = refusing_transport()
    try:
        transport._sock.refuse = code  # type: ignore[attr-defined]
        for _ in range(3):
            transport.sendto(b"lost", ("127.0.0.1", 9))
        assert transport.counters.send_errors == 3
        assert transport.counters.send_errors_by_errno == {code: 3}
        assert transport.counters.sent == 0
    finally:
        transport.close()


def test_receive_errors_never_end_a_receive() -> None:
    transport = refusing_transport(fail_receives=[errno.EIO, errno.ENOMEM, errno.ECONNREFUSED])
    sender = UdpTransport.bind("127.0.0.1")
    try:
        sender.sendto(b"after the errors", transport.local_address)
        assert transport.recvfrom(5.0) == (b"after the errors", sender.local_address)
        assert transport.counters.recv_errors == 3
        assert transport.counters.recv_errors_by_errno == {
            errno.EIO: 1,
            errno.ENOMEM: 1,
            errno.ECONNREFUSED: 1,
        }
    finally:
        sender.close()
        transport.close()


def test_send_errors_are_logged_once_per_interval_per_errno(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counts: dict[int, int] = {}
    errors = ErrorLog("sendto", counts, interval=10.0)
    einval = OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    eperm = OSError(errno.EPERM, os.strerror(errno.EPERM))
    with caplog.at_level(logging.INFO, logger="udpchat.transport"):
        for i in range(100):
            errors.failed(einval, now=100.0 + i * 0.05)  # 5 s of failures
        errors.failed(eperm, now=101.0)
        errors.failed(einval, now=110.0)  # 10 s after the first line: a summary
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "EINVAL" in lines[0] and "1 datagram lost" in lines[0]
    assert "EPERM" in lines[1]
    assert "EINVAL" in lines[2] and "100 datagrams lost in the last 10 s" in lines[2]
    assert counts == {errno.EINVAL: 101, errno.EPERM: 1}


def test_close_unblocks_receiver() -> None:
    transport = UdpTransport.bind("127.0.0.1")
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(transport.recvfrom(None)))
    thread.start()
    time.sleep(0.05)
    start = time.monotonic()
    transport.close()
    thread.join(5.0)
    assert not thread.is_alive()
    assert time.monotonic() - start < 1.0
    assert results == [None]
    assert transport.recvfrom(None) is None
    transport.sendto(b"ignored after close", transport.local_address)
    transport.close()


def test_concurrent_senders_one_receiver(pair: tuple[UdpTransport, UdpTransport]) -> None:
    a, b = pair

    def send(tag: int) -> None:
        for i in range(50):
            a.sendto(bytes([tag, i]), b.local_address)

    senders = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for thread in senders:
        thread.start()
    got = set()
    for _ in range(200):
        item = b.recvfrom(5.0)
        if item is None:
            break
        got.add(item[0])
    for thread in senders:
        thread.join(5.0)
    assert len(got) == 200


# --- impaired ----------------------------------------------------------------------------


def drain(transport: DatagramTransport, quiet: float = 0.3, limit: int = 10_000) -> list[bytes]:
    """Receive until ``quiet`` seconds pass with nothing (bounded by ``limit`` datagrams)."""
    out = []
    for _ in range(limit):
        got = transport.recvfrom(quiet)
        if got is None:
            break
        out.append(got[0])
    return out


def test_impaired_transport_drops_configured_fraction() -> None:
    sender = ImpairedTransport(UdpTransport.bind("127.0.0.1"), ImpairmentConfig(loss=0.3, seed=1))
    receiver = UdpTransport.bind("127.0.0.1")
    try:
        n, got = 2000, 0
        for batch in range(n // 100):  # in batches, so the kernel's receive buffer never fills
            for i in range(100):
                sender.sendto((batch * 100 + i).to_bytes(2, "big"), receiver.local_address)
            while got < sender.outbound.passed and receiver.recvfrom(5.0) is not None:
                got += 1
        assert receiver.recvfrom(0.1) is None
        assert sender.outbound.submitted == n
        assert got == sender.outbound.passed
        assert sender.outbound.dropped / n == pytest.approx(0.3, abs=0.04)
    finally:
        sender.close()
        receiver.close()


def test_impaired_transport_inbound_loss_and_counts() -> None:
    sender = UdpTransport.bind("127.0.0.1")
    receiver = ImpairedTransport(UdpTransport.bind("127.0.0.1"), ImpairmentConfig(loss=0.5, seed=2))
    try:
        got = []
        for batch in range(4):
            for i in range(100):
                sender.sendto(bytes([batch, i]), receiver.local_address)
            got += drain(receiver, quiet=0.2)
        assert receiver.inbound.submitted == 400
        assert len(got) == receiver.inbound.passed
        assert 120 < len(got) < 280
    finally:
        sender.close()
        receiver.close()


def test_outbound_delay_released_without_receiving() -> None:
    config = ImpairmentConfig(delay=0.1, seed=3)
    sender = ImpairedTransport(UdpTransport.bind("127.0.0.1"), config)
    receiver = UdpTransport.bind("127.0.0.1")
    try:
        start = time.monotonic()
        sender.sendto(b"late", receiver.local_address)
        assert receiver.recvfrom(0.05) is None
        assert receiver.recvfrom(5.0) is not None
        elapsed = time.monotonic() - start
        assert 0.09 <= elapsed < 2.0
        assert sender.outbound.delayed == 1
    finally:
        sender.close()
        receiver.close()


def test_inbound_delay_and_timeout_honoured() -> None:
    sender = UdpTransport.bind("127.0.0.1")
    receiver = ImpairedTransport(UdpTransport.bind("127.0.0.1"), ImpairmentConfig(delay=0.2))
    try:
        sender.sendto(b"slow", receiver.local_address)
        start = time.monotonic()
        assert receiver.recvfrom(0.05) is None
        assert time.monotonic() - start < 1.0
        got = receiver.recvfrom(5.0)
        assert got == (b"slow", sender.local_address)
        assert time.monotonic() - start >= 0.15
    finally:
        sender.close()
        receiver.close()


def test_noop_impairment_preserves_order() -> None:
    sender = ImpairedTransport(UdpTransport.bind("127.0.0.1"), ImpairmentConfig())
    receiver = ImpairedTransport(UdpTransport.bind("127.0.0.1"), ImpairmentConfig())
    try:
        for i in range(100):
            sender.sendto(bytes([i]), receiver.local_address)
        assert drain(receiver) == [bytes([i]) for i in range(100)]
    finally:
        sender.close()
        receiver.close()


def test_impaired_close_unblocks_receiver_and_stops_thread() -> None:
    transport = ImpairedTransport(UdpTransport.bind("127.0.0.1"), ImpairmentConfig(delay=1.0))
    transport.sendto(b"in flight", transport.local_address)
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(transport.recvfrom(None)))
    thread.start()
    time.sleep(0.05)
    before = threading.active_count()
    transport.close()
    thread.join(5.0)
    assert not thread.is_alive() and results == [None]
    assert threading.active_count() <= before - 1
    assert not any(t.name == "impair-out" and t.is_alive() for t in threading.enumerate())


@pytest.mark.timeout(10)
@pytest.mark.parametrize("impaired", [False, True])
def test_wake_unblocks_a_receiver_and_the_transport_lives_on(impaired: bool) -> None:
    transport: DatagramTransport = UdpTransport.bind("127.0.0.1")
    if impaired:
        transport = ImpairedTransport(transport, ImpairmentConfig(delay=0.001))
    results: list[object] = []
    started = time.monotonic()
    receiver = threading.Thread(target=lambda: results.append(transport.recvfrom(5.0)))
    receiver.start()
    time.sleep(0.05)  # let it block; only speeds the test up, correctness does not depend on it
    transport.wake()
    receiver.join(2.0)
    assert not receiver.is_alive() and results == [None]
    assert time.monotonic() - started < 2.0
    sender = UdpTransport.bind("127.0.0.1")
    try:
        sender.sendto(b"still works", transport.local_address)
        got = transport.recvfrom(2.0)
        assert got is not None and got[0] == b"still works"
    finally:
        sender.close()
        transport.close()


def _alarmed() -> UdpTransport:
    transport = UdpTransport.bind("127.0.0.1")
    if transport._alarm is None:
        transport.close()
        pytest.skip("no timerfd here: wake_at wakes at once")
    return transport


def test_wake_at_ends_a_wait_at_that_time_not_before() -> None:
    transport = _alarmed()
    try:
        started = time.monotonic()
        when = started + 0.1
        transport.wake_at(when)
        assert transport.recvfrom(5.0) is None
        assert when <= time.monotonic() < started + 2.0
        # Once: the next wait is its own again.
        sender = UdpTransport.bind("127.0.0.1")
        sender.sendto(b"after", transport.local_address)
        got = transport.recvfrom(2.0)
        sender.close()
        assert got is not None and got[0] == b"after"
    finally:
        transport.close()


def test_wake_at_none_forgets_the_alarm() -> None:
    transport = _alarmed()
    try:
        transport.wake_at(time.monotonic())  # due at once, even readable already
        transport.wake_at(None)
        started = time.monotonic()
        assert transport.recvfrom(0.3) is None
        assert time.monotonic() - started >= 0.29  # the whole wait: nothing ended it
    finally:
        transport.close()


# --- socket buffers and the kernel's drop counter ------------------------------------------


def test_buffers_are_sized_as_asked_within_what_the_system_allows() -> None:
    small = UdpTransport.bind("127.0.0.1", 0, SocketBuffers(4096, 4096))
    large = UdpTransport.bind("127.0.0.1", 0, SocketBuffers(1 << 20, 1 << 20))
    try:
        assert small.buffers.receive < large.buffers.receive
        assert small.buffers.send < large.buffers.send
        # the system may cap the request (Linux: rmem_max) but grants at least its default
        assert large.buffers.receive >= 65536
    finally:
        small.close()
        large.close()


@pytest.mark.skipif(not os.path.exists("/proc/net/udp"), reason="Linux counts drops per socket")
def test_kernel_drops_count_what_a_full_receive_buffer_lost() -> None:
    receiver = UdpTransport.bind("127.0.0.1", 0, SocketBuffers(4096, 0))
    sender = UdpTransport.bind("127.0.0.1")
    try:
        assert receiver.kernel_drops() == 0
        for _ in range(200):  # 200 KB into a buffer of a few KB, nobody reading
            sender.sendto(b"x" * 1000, receiver.local_address)
        drops = receiver.kernel_drops()
        assert drops is not None and drops > 100
        received = 0
        while receiver.recvfrom(0.0) is not None:
            received += 1
        assert received + drops == 200
    finally:
        receiver.close()
        sender.close()
    assert receiver.kernel_drops() is None  # closed: nothing to ask


@pytest.mark.parametrize("missing", ["timerfd", "epoll"])
def test_without_an_alarm_wake_at_wakes_at_once_and_datagrams_still_arrive(
    missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the system has no timerfd (or no epoll at all: the selectors path of other
    systems), a wait that must end earlier ends now instead of never."""
    if missing == "timerfd":
        monkeypatch.setattr("udpchat.transport.Alarm.create", classmethod(lambda cls: None))
    else:
        monkeypatch.delattr("select.epoll", raising=False)
    transport = UdpTransport.bind("127.0.0.1")
    try:
        assert transport._alarm is None
        assert (transport._epoll is None) == (missing == "epoll")
        started = time.monotonic()
        transport.wake_at(started + 60.0)
        assert transport.recvfrom(10.0) is None
        assert time.monotonic() - started < 5.0  # at once, not in a minute
        sender = UdpTransport.bind("127.0.0.1")
        try:
            sender.sendto(b"still here", transport.local_address)
            got = transport.recvfrom(5.0)
            assert got is not None and got[0] == b"still here"
        finally:
            sender.close()
    finally:
        transport.close()


def test_an_alarm_is_closed_when_dropped_without_close() -> None:
    alarm = Alarm.create()
    if alarm is None:
        pytest.skip("no timerfd here")
    fd = alarm.fileno()
    os.fstat(fd)  # open
    del alarm
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_an_alarm_for_asap_or_the_past_fires_at_once() -> None:
    transport = _alarmed()
    try:
        for when in (-math.inf, 0.0, time.monotonic() - 5.0):
            started = time.monotonic()
            transport.wake_at(when)
            assert transport.recvfrom(5.0) is None
            assert time.monotonic() - started < 2.0  # not the whole wait
    finally:
        transport.close()
