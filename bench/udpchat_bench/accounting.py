"""Cost accounting from inside a measured process: CPU time and traffic on its own sockets.

Each process measures itself, so no external tool (and no extra dependency) is needed, and the
numbers cover only that process. Wire bytes are an *estimate* built from what user space can
see:

* UDP: every ``sendto``/``send`` is one datagram, so wire bytes are payload + 28 (IPv4 20 +
  UDP 8) per datagram. This is exact for IPv4 loopback, retransmissions included, since any
  retransmission is a datagram the application sent itself.
* TCP: the kernel decides segmentation, retransmits on its own and sends pure ACKs that user
  space never sees. We count each ``send``/``sendall`` call as one segment and add 52 bytes
  per call: IPv4 20 + TCP 20 + 12 for the timestamp option Linux puts on every segment by
  default (``net.ipv4.tcp_timestamps=1``); a bare 40 undercounts every segment on Linux. With
  Nagle several calls may share a segment, and a large call may span several; TCP's own
  retransmissions and ACK-only segments are invisible (on a quiet loopback link there is about
  one pure ACK per data segment), so the TCP estimate is a lower bound. When a run happens in a
  private network namespace the harness also reports the kernel's own counters, which include
  all of that.
"""

from __future__ import annotations

import os
import resource
import threading
from dataclasses import asdict, dataclass
from typing import Any

UDP_IPV4_OVERHEAD = 28
TCP_IPV4_OVERHEAD = 52


@dataclass(frozen=True)
class MeterReading:
    """Totals for one process's sockets (payload bytes as seen by the socket API)."""

    datagrams_sent: int
    datagrams_received: int
    segments_sent: int
    bytes_sent: int
    bytes_received: int
    wire_bytes_sent: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SocketMeter:
    """Thread-safe counters that a system updates around each socket call.

    ``*_sent`` methods take the payload length handed to the kernel; ``*_received`` methods
    the length the kernel returned. Relays call these from several threads, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._datagrams_sent = 0
        self._datagrams_received = 0
        self._segments_sent = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._wire_bytes_sent = 0

    def datagram_sent(self, nbytes: int) -> None:
        with self._lock:
            self._datagrams_sent += 1
            self._bytes_sent += nbytes
            self._wire_bytes_sent += nbytes + UDP_IPV4_OVERHEAD

    def datagram_received(self, nbytes: int) -> None:
        with self._lock:
            self._datagrams_received += 1
            self._bytes_received += nbytes

    def stream_sent(self, nbytes: int) -> None:
        """One ``send``/``sendall`` call on a TCP socket, counted as one segment (estimate)."""
        with self._lock:
            self._segments_sent += 1
            self._bytes_sent += nbytes
            self._wire_bytes_sent += nbytes + TCP_IPV4_OVERHEAD

    def stream_received(self, nbytes: int) -> None:
        with self._lock:
            self._bytes_received += nbytes

    def reading(self) -> MeterReading:
        with self._lock:
            return MeterReading(
                datagrams_sent=self._datagrams_sent,
                datagrams_received=self._datagrams_received,
                segments_sent=self._segments_sent,
                bytes_sent=self._bytes_sent,
                bytes_received=self._bytes_received,
                wire_bytes_sent=self._wire_bytes_sent,
            )


def process_cpu_s() -> float:
    """User + system CPU seconds of this process, all threads, since it started."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuWindow:
    """CPU spent by this process since construction, excluding interpreter start-up.

    Starting the window once the process is ready keeps Python's import cost (tens of ms) out
    of per-delivery figures, which would otherwise dominate short runs.
    """

    def __init__(self) -> None:
        self._start = process_cpu_s()

    def elapsed_s(self) -> float:
        return process_cpu_s() - self._start


def process_total_cpu_s() -> float:
    """CPU seconds including start-up, from ``os.times()`` (children excluded)."""
    t = os.times()
    return t.user + t.system


KERNEL_COUNTERS: dict[str, tuple[str, str, str]] = {
    "ip_out_packets": ("/proc/net/snmp", "Ip", "OutRequests"),
    "ip_out_octets": ("/proc/net/netstat", "IpExt", "OutOctets"),
    "tcp_out_segments": ("/proc/net/snmp", "Tcp", "OutSegs"),
    "tcp_retransmitted_segments": ("/proc/net/snmp", "Tcp", "RetransSegs"),
    "udp_out_datagrams": ("/proc/net/snmp", "Udp", "OutDatagrams"),
    "udp_receive_buffer_errors": ("/proc/net/snmp", "Udp", "RcvbufErrors"),
}
"""Kernel SNMP counters worth reporting: what really left the IP layer, ACKs and TCP
retransmissions included. They are per network namespace, so they are only meaningful when
the whole run has a namespace to itself (otherwise they include the rest of the machine)."""


def _parse_proc_table(text: str) -> dict[tuple[str, str], int]:
    """Parse /proc/net/snmp-style text: pairs of ``Prefix: names`` / ``Prefix: values`` lines."""
    values: dict[tuple[str, str], int] = {}
    lines = text.splitlines()
    for header, row in zip(lines[::2], lines[1::2], strict=False):
        prefix, _, names = header.partition(":")
        _, _, numbers = row.partition(":")
        for name, number in zip(names.split(), numbers.split(), strict=False):
            try:
                values[(prefix, name)] = int(number)
            except ValueError:
                continue
    return values


def kernel_counters() -> dict[str, int]:
    """Current values of `KERNEL_COUNTERS` in this process's network namespace.

    Missing files or fields are left out rather than guessed.
    """
    tables: dict[str, dict[tuple[str, str], int]] = {}
    result: dict[str, int] = {}
    for key, (path, prefix, name) in KERNEL_COUNTERS.items():
        if path not in tables:
            try:
                with open(path, encoding="ascii") as f:
                    tables[path] = _parse_proc_table(f.read())
            except OSError:
                tables[path] = {}
        value = tables[path].get((prefix, name))
        if value is not None:
            result[key] = value
    return result


def counters_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if k in before}
