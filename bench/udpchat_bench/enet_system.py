"""ENet (through pyenet) as an optional reference: a relay that forwards every message on a
reliable channel to every other peer, flushed at once, as a game server would.

ENet is what a user picks for reliable ordered UDP without writing it; it has no
encryption, no room order and no resumption, so it shows the cost of reliability alone.
pyenet is not a dependency: ``available()`` says whether it is installed, and the sweep
leaves ENet out (saying so) when it is not (``pip install pyenet``).

ENet owns its socket, so wire cost is taken from the host's own counters
(``totalSentData``/``totalSentPackets``, every ACK, ping and retransmission included) and
reported to the meter per datagram, at the average size of each batch. pyenet holds the
GIL while ``service`` waits, and a host is not thread-safe: every loop here waits on the
host's socket with ``select`` (no lock, no GIL) for at most ``WAIT_S``, then services the
host without waiting (a member under a lock its sending thread shares). ENet runs its
retransmission timers only in ``service``, so they run at least every ``WAIT_S``, a game
loop's tick; polling every millisecond instead cost the relay 15% of a core at 200 msg/s.
"""

from __future__ import annotations

import importlib
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from udpchat.endpoint import Address
from udpchat_bench.accounting import SocketMeter
from udpchat_bench.systems import MemberArgs, MemberLink, RelayArgs, UnsupportedOption

WAIT_S = 0.005
"""Longest wait on a host's socket before servicing its timers again."""
MAX_PEERS = 64
CHANNEL = 0


def available() -> tuple[bool, str]:
    """Whether pyenet can be imported, and why not."""
    try:
        _enet()
    except ImportError as exc:
        return False, f"pyenet is not installed ({exc.name}): pip install pyenet"
    return True, "pyenet"


def _enet() -> Any:
    return importlib.import_module("enet")  # no type stubs: typed as Any


class _Counter:
    """Turns a host's running totals into per-datagram meter reports."""

    def __init__(self, host: Any, meter: SocketMeter) -> None:
        self._host, self._meter = host, meter
        self._sent = self._sent_bytes = self._received = self._received_bytes = 0

    def report(self) -> None:
        host, meter = self._host, self._meter
        sent, sent_bytes = host.totalSentPackets, host.totalSentData
        received, received_bytes = host.totalReceivedPackets, host.totalReceivedData
        _spread(meter.datagram_sent, sent - self._sent, sent_bytes - self._sent_bytes)
        got, got_bytes = received - self._received, received_bytes - self._received_bytes
        _spread(meter.datagram_received, got, got_bytes)
        self._sent, self._sent_bytes = sent, sent_bytes
        self._received, self._received_bytes = received, received_bytes


def _spread(report: Callable[[int], None], datagrams: int, nbytes: int) -> None:
    if datagrams <= 0:
        return
    size, extra = divmod(nbytes, datagrams)
    for i in range(datagrams):
        report(size + (1 if i < extra else 0))


class _EnetLink:
    def __init__(self, host: Any, peer: Any, meter: SocketMeter) -> None:
        self._enet = _enet()
        self._host, self._peer = host, peer
        self._lock = threading.Lock()
        self._inbox: deque[bytes] = deque()
        self._counter = _Counter(host, meter)
        self._fd = host.socket.fileno()

    def send(self, payload: bytes) -> None:
        enet = self._enet
        with self._lock:
            self._peer.send(CHANNEL, enet.Packet(payload, enet.PACKET_FLAG_RELIABLE))
            self._host.flush()
            self._counter.report()

    def recv(self, timeout: float) -> bytes | None:
        end = time.monotonic() + timeout
        enet = self._enet
        while True:
            if not self._inbox:
                select.select([self._fd], [], [], WAIT_S)
            with self._lock:
                if self._inbox:
                    return self._inbox.popleft()
                event = self._host.service(0)
                while event is not None and event.type != enet.EVENT_TYPE_NONE:
                    if event.type == enet.EVENT_TYPE_RECEIVE:
                        self._inbox.append(event.packet.data)
                    event = self._host.check_events()
                self._counter.report()
                if self._inbox:
                    return self._inbox.popleft()
            if time.monotonic() >= end:
                return None

    def close(self) -> None:
        with self._lock:
            self._peer.disconnect_now(0)
            self._host.flush()
            self._counter.report()


class EnetSystem:
    """Relay: every received packet goes to every other connected peer, reliable, flushed."""

    name = "enet"
    supports_simulated_loss = False

    def run_relay(
        self,
        args: RelayArgs,
        meter: SocketMeter,
        ready: Callable[[Address], None],
        stop: threading.Event,
    ) -> None:
        if args.loss_percent:
            raise UnsupportedOption("ENet runs only under kernel loss")
        enet = _enet()
        host = enet.Host(enet.Address(args.host.encode(), 0), MAX_PEERS, 1, 0, 0)
        counter = _Counter(host, meter)
        peers: dict[int, Any] = {}
        ready((args.host, host.address.port))
        fd = host.socket.fileno()
        while not stop.is_set():
            select.select([fd], [], [], WAIT_S)
            event = host.service(0)
            while event is not None and event.type != enet.EVENT_TYPE_NONE:
                if event.type == enet.EVENT_TYPE_CONNECT:
                    peers[event.peer.incomingPeerID] = event.peer
                elif event.type == enet.EVENT_TYPE_DISCONNECT:
                    peers.pop(event.peer.incomingPeerID, None)
                elif event.type == enet.EVENT_TYPE_RECEIVE:
                    data, source = event.packet.data, event.peer.incomingPeerID
                    for key, peer in peers.items():
                        if key != source:
                            peer.send(CHANNEL, enet.Packet(data, enet.PACKET_FLAG_RELIABLE))
                event = host.check_events()
            host.flush()
            counter.report()

    def connect_member(self, args: MemberArgs, meter: SocketMeter) -> MemberLink:
        if args.loss_percent:
            raise UnsupportedOption("ENet runs only under kernel loss")
        enet = _enet()
        host = enet.Host(None, 1, 1, 0, 0)
        peer = host.connect(enet.Address(args.relay[0].encode(), args.relay[1]), 1)
        end = time.monotonic() + args.connect_timeout_s
        while time.monotonic() < end:
            event = host.service(10)
            if event.type == enet.EVENT_TYPE_CONNECT:
                # The relay learns of us on its next service; one more round trip makes sure
                # it has before anything is sent to the room.
                host.service(20)
                return _EnetLink(host, peer, meter)
        raise TimeoutError(f"ENet: no connection to {args.relay} within {args.connect_timeout_s} s")


ENET = EnetSystem()
