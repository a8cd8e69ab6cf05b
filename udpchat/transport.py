"""The seam between sockets and the protocol cores: something that sends and receives datagrams.

Protocol code depends only on :class:`DatagramTransport`, so the same code runs over a
real UDP socket, over an impaired one, or over a fake in tests.

Socket buffers are sized on purpose (``udpchat.socketbuffers``), and what the kernel dropped
for a full receive buffer is read back per socket.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from udpchat.alarm import Alarm
from udpchat.endpoint import Address
from udpchat.socketbuffers import SocketBuffers, granted_buffers, kernel_drops, set_buffers

__all__ = [
    "ERROR_LOG_INTERVAL", "MAX_DATAGRAM", "DatagramTransport", "ErrorLog",
    "SocketBuffers", "SocketCounters", "UdpTransport", "format_address", "kernel_drops",
    "normalise", "open_udp_socket", "resolve",
]

MAX_DATAGRAM = 65535

log = logging.getLogger("udpchat.transport")

# One line per errno at most this often: a flood of failing sends must not flood the log.
ERROR_LOG_INTERVAL = 10.0


class DatagramTransport(Protocol):
    """Unreliable, unordered datagrams to and from ``(host, port)`` addresses."""

    @property
    def local_address(self) -> Address: ...

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send one datagram, or lose it: what the system says about it is not raised."""
        ...

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        """Next datagram, or None when ``timeout`` seconds pass (or the transport is closed).

        A receive error costs at most a datagram and is not raised."""
        ...

    def wake(self) -> None:
        """Make a thread blocked in ``recvfrom`` return None now (its timer moved earlier)."""
        ...

    def close(self) -> None: ...


def normalise(sockaddr: tuple[object, ...]) -> Address:
    """IPv6 sockaddrs carry flowinfo and scope id too; callers only need host and port."""
    host, port = sockaddr[0], sockaddr[1]
    assert isinstance(host, str) and isinstance(port, int)
    return (host, port)


def format_address(address: Address) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:9000``), as a user writes it."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve(host: str, port: int, passive: bool = False) -> tuple[socket.AddressFamily, Address]:
    """The address family and a concrete address for ``host`` (IPv4 or IPv6)."""
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, 0, flags
        )
    except socket.gaierror as error:  # "[Errno -2] Name or service not known" names nothing
        raise OSError(error.errno, f"cannot find the host {host!r} ({error.strerror})") from None
    family, _, _, _, sockaddr = infos[0]
    return family, normalise(sockaddr)


def open_udp_socket(host: str, port: int, buffers: SocketBuffers | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to ``(host, port)``; port 0 picks a free port. With
    ``buffers``, its buffers are sized before it is bound (nothing can queue before that)."""
    family, addr = resolve(host, port, passive=True)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if buffers is not None:
            set_buffers(sock, buffers)
        if sys.platform == "win32":
            # Otherwise an ICMP port-unreachable makes every later recvfrom fail (WinError 10054).
            sock.ioctl(socket.SIO_UDP_CONNRESET, False)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class SocketCounters:
    """Traffic, and the errors that each cost one datagram (by errno: 0 when it had none)."""

    sent: int = 0
    received: int = 0
    send_errors: int = 0
    recv_errors: int = 0
    send_errors_by_errno: dict[int, int] = field(default_factory=dict)
    recv_errors_by_errno: dict[int, int] = field(default_factory=dict)


class ErrorLog:
    """Counts failed socket calls by errno into ``by_errno``, and logs them at most once per
    ``interval`` seconds per errno with how many failed since: an operator learns of a
    firewall or a bad route without a line per datagram. Not thread-safe: each caller holds
    its own lock."""

    def __init__(
        self, what: str, by_errno: dict[int, int], interval: float = ERROR_LOG_INTERVAL
    ) -> None:
        self._what = what
        self._by_errno = by_errno
        self._interval = interval
        self._last_logged: dict[int, float] = {}
        self._since_logged: dict[int, int] = {}

    def failed(self, error: OSError, now: float) -> None:
        code = error.errno or 0
        self._by_errno[code] = self._by_errno.get(code, 0) + 1
        self._since_logged[code] = self._since_logged.get(code, 0) + 1
        last = self._last_logged.get(code)
        if last is not None and now - last < self._interval:
            return
        count = self._since_logged.pop(code)
        self._last_logged[code] = now
        name = errno.errorcode.get(code, str(code))
        period = "" if last is None else f" in the last {now - last:.0f} s"
        log.info(
            "%s failed (%s: %s): %d datagram%s lost%s",
            self._what,
            name,
            error.strerror or error,
            count,
            "" if count == 1 else "s",
            period,
        )


class UdpTransport:
    """A UDP socket: one thread may receive while others send; ``close()`` wakes the receiver."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._local = normalise(sock.getsockname())
        # Read once: the relay reports them after serving may already have closed the socket.
        self._buffers = granted_buffers(sock)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sock_fd = sock.fileno()
        self._wake_fd = self._wake_r.fileno()
        # Where the system has epoll, a wait is one call on it and a look at the file
        # descriptors it returns: ``selectors`` would build a key object and a list per wait,
        # which costs more than the wait's system call.
        self._epoll: select.epoll | None = None
        self._selector: selectors.BaseSelector | None = None
        self._alarm: Alarm | None = None
        self._alarm_fd = -1
        if hasattr(select, "epoll"):
            self._epoll = select.epoll(3)
            self._epoll.register(self._sock_fd, select.EPOLLIN)
            self._epoll.register(self._wake_fd, select.EPOLLIN)
            self._alarm = Alarm.create()
            if self._alarm is not None:
                self._alarm_fd = self._alarm.fileno()
                self._epoll.register(self._alarm_fd, select.EPOLLIN)
        else:
            self._selector = selectors.DefaultSelector()
            self._selector.register(sock, selectors.EVENT_READ)
            self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._recv_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        self._peer: Address | None = None
        self.counters = SocketCounters()
        self._send_error_log = ErrorLog("sendto", self.counters.send_errors_by_errno)
        self._recv_error_log = ErrorLog("recvfrom", self.counters.recv_errors_by_errno)

    @classmethod
    def bind(cls, host: str, port: int = 0, buffers: SocketBuffers | None = None) -> UdpTransport:
        """Bind to ``host`` (an IPv4 or IPv6 address or name) and ``port`` (0 for any), with
        ``buffers`` sized when given."""
        return cls(open_udp_socket(host, port, buffers))

    @property
    def buffers(self) -> SocketBuffers:
        """The buffer sizes the kernel granted the socket when it was opened."""
        return self._buffers

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped before this socket read them (see ``kernel_drops``)."""
        return None if self._closed else kernel_drops(self._sock)

    @property
    def local_address(self) -> Address:
        return self._local

    @property
    def closed(self) -> bool:
        return self._closed

    def connect(self, peer: Address) -> None:
        """Talk to ``peer`` only. The system then drops datagrams from anyone else, and an
        ICMP port-unreachable from ``peer`` comes back as ECONNREFUSED (counted in
        ``counters``): that is how a client learns at once that nothing listens there."""
        self._sock.connect(peer)
        self._peer = peer
        self._local = normalise(self._sock.getsockname())

    @property
    def refused(self) -> int:
        """Socket calls that failed with ECONNREFUSED: the peer's port is closed."""
        refused = errno.ECONNREFUSED
        by_send = self.counters.send_errors_by_errno.get(refused, 0)
        return by_send + self.counters.recv_errors_by_errno.get(refused, 0)

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send one datagram. Whatever the socket says (a vanished peer, a full buffer, a
        firewall, no route, port 0, too large) is about this datagram alone: it is lost, as
        UDP may lose it anyway, counted and logged, never raised."""
        with self._send_lock:
            if self._closed:
                return
            try:
                if addr == self._peer:
                    self._sock.send(data)  # some systems refuse sendto on a connected socket
                else:
                    self._sock.sendto(data, addr)
            except OSError as exc:
                self.counters.send_errors += 1
                self._send_error_log.failed(exc, time.monotonic())
            else:
                self.counters.sent += 1

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        if timeout is not None and timeout <= 0.0:
            # A poll (the driver draining a batch): the socket is non-blocking, so ask it
            # directly; a select first would cost a second system call per datagram.
            with self._recv_lock:
                return None if self._closed else self._receive_ready()
        deadline = None if timeout is None else time.monotonic() + timeout
        remaining = timeout
        with self._recv_lock:
            while not self._closed:
                ready = self._wait(remaining)
                if self._closed:
                    return None
                if self._wake_fd in ready:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    return None
                if self._alarm_fd in ready:
                    assert self._alarm is not None
                    self._alarm.clear()
                    return None
                if self._sock_fd in ready:
                    got = self._receive_ready()
                    if got is not None:
                        return got
                if deadline is None:
                    continue
                # readiness without a datagram (a bad checksum): wait out the rest
                remaining = deadline - time.monotonic()
                if remaining <= 0.0:
                    return None
        return None

    def _wait(self, timeout: float | None) -> list[int]:
        """The file descriptors (socket, wake-up pair, alarm) readable within ``timeout`` s."""
        epoll = self._epoll
        if epoll is not None:
            # epoll rounds a timeout up to whole milliseconds: a timer is never woken early
            return [fd for fd, _ in epoll.poll(-1 if timeout is None else timeout)]
        assert self._selector is not None
        return [key.fd for key, _ in self._selector.select(timeout)]

    def _receive_ready(self) -> tuple[bytes, Address] | None:
        """One datagram if the socket has one now; None if not, or on an error that cost
        one (counted). Called holding ``_recv_lock``."""
        try:
            data, sockaddr = self._sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return None  # nothing there (or readiness was spurious, e.g. a bad checksum)
        except OSError as exc:  # e.g. ICMP unreachable from an earlier send
            self.counters.recv_errors += 1
            self._recv_error_log.failed(exc, time.monotonic())
            return None
        self.counters.received += 1
        # an IPv4 sockaddr is already (host, port): only IPv6 has more to drop
        return data, sockaddr if len(sockaddr) == 2 else normalise(sockaddr)

    def wake(self) -> None:
        with self._send_lock:
            if not self._closed:
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"\1")

    def wake_at(self, when: float | None) -> None:
        """Make a thread blocked in ``recvfrom`` return None at ``when`` (``time.monotonic``)
        at the latest, replacing an earlier ``wake_at``; where the system has no alarm
        (``udpchat.alarm``), now. None: forget an earlier ``wake_at`` (that thread no longer
        needs it). The caller serialises its calls."""
        with self._send_lock:
            if self._closed:
                return
            alarm = self._alarm
            if when is None:
                if alarm is not None:
                    alarm.disarm()
                return
            if alarm is not None and alarm.arm(when):
                return
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\1")

    def close(self) -> None:
        """Stop: a thread blocked in ``recvfrom`` returns None promptly. Idempotent."""
        with self._send_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")
        with self._recv_lock:  # the receiver, if any, has been woken and leaves promptly
            if self._epoll is not None:
                self._epoll.close()
            if self._alarm is not None:
                self._alarm.close()
            if self._selector is not None:
                self._selector.close()
            for sock in (self._sock, self._wake_r, self._wake_w):
                sock.close()

