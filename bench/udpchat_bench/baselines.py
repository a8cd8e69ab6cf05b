"""The two baselines udpchat is measured against.

* ``plain-udp``: a forwarder with no reliability at all. It shows the floor on latency and
  wire cost, and what loss does to chat when nothing repairs it.
* ``tcp-relay``: the classic design this project grew from: a TCP server with one thread per
  member, 4-byte length-prefixed frames, fanning each message out with a blocking ``sendall``
  under a per-destination lock. Nagle stays on by default (``TCP_NODELAY`` off), as in that
  design; ``options={"nodelay": True}`` turns it off.

Both keep their framing minimal so that any extra cost measured for udpchat is the price of
its reliability layer and not of a fatter envelope here.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from udpchat.endpoint import Address
from udpchat_bench.accounting import SocketMeter
from udpchat_bench.systems import (
    MemberArgs,
    MemberLink,
    RelayArgs,
    UnsupportedOption,
)

POLL_S = 0.1
"""How often blocking loops look at their stop flag: bounds shutdown time."""

MAX_DATAGRAM = 65535


class _Dropper:
    """User-space stand-in for a lossy network: drops a share of received packets."""

    def __init__(self, loss_percent: float, seed: int) -> None:
        if not 0 <= loss_percent <= 100:
            raise UnsupportedOption("loss_percent must be within [0, 100]")
        self._p = loss_percent / 100
        self._rng = random.Random(seed)

    def __call__(self) -> bool:
        return self._p > 0 and self._rng.random() < self._p


# --- plain UDP forwarder -------------------------------------------------------------------

UDP_HELLO = b"H"
UDP_WELCOME = b"W"
UDP_DATA = b"D"
UDP_BYE = b"B"
UDP_HELLO_RETRY_S = 0.2


class _PlainUdpLink:
    """A member of the plain UDP forwarder: one connected socket, no reliability."""

    def __init__(self, sock: socket.socket, meter: SocketMeter, drop: _Dropper) -> None:
        self._sock = sock
        self._meter = meter
        self._drop = drop

    def join(self, timeout_s: float) -> None:
        """Say hello until welcomed: registration must survive loss even though data need not,
        otherwise a lossy run would measure missing members rather than lost messages."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._send_raw(UDP_HELLO)
            wait_until = min(deadline, time.monotonic() + UDP_HELLO_RETRY_S)
            while (left := wait_until - time.monotonic()) > 0:
                data = self._recv_raw(left)
                if data == UDP_WELCOME:
                    return
        raise TimeoutError(f"plain-udp relay did not welcome us within {timeout_s} s")

    def _send_raw(self, data: bytes) -> None:
        self._sock.send(data)
        self._meter.datagram_sent(len(data))

    def _recv_raw(self, timeout: float) -> bytes | None:
        readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        if not readable:
            return None
        try:
            data = self._sock.recv(MAX_DATAGRAM)
        except OSError:  # e.g. ICMP port unreachable reported on the connected socket
            return None
        if self._drop():
            return None
        self._meter.datagram_received(len(data))
        return data

    def send(self, payload: bytes) -> None:
        self._send_raw(UDP_DATA + payload)

    def recv(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            data = self._recv_raw(deadline - time.monotonic())
            if data is not None and data[:1] == UDP_DATA:
                return data[1:]
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_raw(UDP_BYE)
        self._sock.close()


class PlainUdpSystem:
    """Relay registers members by a hello datagram and forwards each data datagram, as is, to
    every other registered member. Nothing is acknowledged or repeated."""

    name = "plain-udp"
    supports_simulated_loss = True

    def run_relay(
        self,
        args: RelayArgs,
        meter: SocketMeter,
        ready: Callable[[Address], None],
        stop: threading.Event,
    ) -> None:
        drop = _Dropper(args.loss_percent, args.seed)
        # Dicts keep insertion order: fan-out order is join order, deterministic across runs.
        members: dict[Address, None] = {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((args.host, 0))
            sock.settimeout(POLL_S)
            host, port = sock.getsockname()[:2]
            ready((host, port))
            while not stop.is_set():
                try:
                    data, addr = sock.recvfrom(MAX_DATAGRAM)
                except TimeoutError:
                    continue
                except OSError:
                    continue
                if drop():
                    continue
                meter.datagram_received(len(data))
                sender: Address = (addr[0], addr[1])
                kind = data[:1]
                if kind == UDP_DATA:
                    for member in members:
                        if member != sender:
                            self._sendto(sock, meter, data, member)
                elif kind == UDP_HELLO:
                    members[sender] = None
                    self._sendto(sock, meter, UDP_WELCOME, sender)
                elif kind == UDP_BYE:
                    members.pop(sender, None)

    @staticmethod
    def _sendto(sock: socket.socket, meter: SocketMeter, data: bytes, addr: Address) -> None:
        try:
            sock.sendto(data, addr)
        except OSError:
            return
        meter.datagram_sent(len(data))

    def connect_member(self, args: MemberArgs, meter: SocketMeter) -> MemberLink:
        drop = _Dropper(args.loss_percent, args.seed)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((args.relay[0], 0))
            sock.connect(args.relay)
            link = _PlainUdpLink(sock, meter, drop)
            link.join(args.connect_timeout_s)
        except BaseException:
            sock.close()
            raise
        return link


# --- TCP relay -----------------------------------------------------------------------------

FRAME_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 20
TCP_WELCOME = FRAME_HEADER.pack(0)
"""An empty frame: the relay's "you are registered". Chat frames are never empty."""


class _FrameReader:
    """Reassembles 4-byte length-prefixed frames from arbitrary TCP chunks."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """Add ``chunk`` and yield every frame it completes (header included)."""
        self._buffer += chunk
        while len(self._buffer) >= FRAME_HEADER.size:
            (length,) = FRAME_HEADER.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes exceeds {MAX_FRAME}")
            end = FRAME_HEADER.size + length
            if len(self._buffer) < end:
                return
            frame = bytes(self._buffer[:end])
            del self._buffer[:end]
            yield frame


def _nodelay(options: Mapping[str, Any]) -> bool:
    value = options.get("nodelay", False)
    if not isinstance(value, bool):
        raise UnsupportedOption("tcp-relay option 'nodelay' must be a boolean")
    return value


class _Peer:
    """One member as the TCP relay sees it; ``lock`` keeps concurrent fan-outs from
    interleaving frames on its socket."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.lock = threading.Lock()


class _TcpLink:
    """A member of the TCP relay: one stream, frames in both directions."""

    def __init__(self, sock: socket.socket, meter: SocketMeter) -> None:
        self._sock = sock
        self._meter = meter
        self._reader = _FrameReader()
        self._pending: list[bytes] = []
        self._eof = False
        self._send_lock = threading.Lock()

    def _sendall(self, data: bytes) -> None:
        with self._send_lock:
            self._sock.sendall(data)
        self._meter.stream_sent(len(data))

    def _next_frame(self, timeout: float) -> bytes | None:
        """Next frame including empty (control) ones, header stripped; None on timeout."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            if self._eof:
                time.sleep(max(0.0, deadline - time.monotonic()))
                return None
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self._sock], [], [], max(0.0, left))
            if not readable:
                return None
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
                continue
            self._meter.stream_received(len(chunk))
            self._pending.extend(self._reader.feed(chunk))
        return self._pending.pop(0)[FRAME_HEADER.size :]

    def wait_welcome(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            frame = self._next_frame(left)
            if frame == b"":
                return
            if self._eof:
                break
        raise TimeoutError(f"tcp relay did not register us within {timeout_s} s")

    def send(self, payload: bytes) -> None:
        if not payload:
            raise ValueError("empty chat messages are reserved for control frames")
        self._sendall(FRAME_HEADER.pack(len(payload)) + payload)

    def recv(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            frame = self._next_frame(left)
            if frame:
                return frame
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class TcpRelaySystem:
    """Thread-per-member TCP relay with blocking fan-out, as in the classic design."""

    name = "tcp-relay"
    supports_simulated_loss = False

    def run_relay(
        self,
        args: RelayArgs,
        meter: SocketMeter,
        ready: Callable[[Address], None],
        stop: threading.Event,
    ) -> None:
        if args.loss_percent:
            raise UnsupportedOption("tcp-relay can only experience loss in the kernel")
        nodelay = _nodelay(args.options)
        peers: list[_Peer] = []
        peers_lock = threading.Lock()
        threads: list[threading.Thread] = []

        def fan_out(source: _Peer, frame: bytes) -> None:
            with peers_lock:
                targets = [p for p in peers if p is not source]
            for target in targets:
                with target.lock:
                    try:
                        target.conn.sendall(frame)
                    except OSError:
                        continue
                meter.stream_sent(len(frame))

        def serve(peer: _Peer) -> None:
            reader = _FrameReader()
            try:
                while not stop.is_set():
                    readable, _, _ = select.select([peer.conn], [], [], POLL_S)
                    if not readable:
                        continue
                    chunk = peer.conn.recv(65536)
                    if not chunk:
                        break
                    meter.stream_received(len(chunk))
                    for frame in reader.feed(chunk):
                        if len(frame) > FRAME_HEADER.size:
                            fan_out(peer, frame)
            except (OSError, ValueError):
                pass
            finally:
                with peers_lock:
                    if peer in peers:
                        peers.remove(peer)
                with peer.lock:
                    peer.conn.close()

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind((args.host, 0))
            listener.listen(128)
            listener.settimeout(POLL_S)
            host, port = listener.getsockname()[:2]
            ready((host, port))
            try:
                while not stop.is_set():
                    try:
                        conn, _ = listener.accept()
                    except (TimeoutError, OSError):
                        continue
                    conn.setblocking(True)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
                    peer = _Peer(conn)
                    with peers_lock:
                        peers.append(peer)
                    # Welcome only once registered, so nothing sent afterwards can miss it.
                    with peer.lock:
                        try:
                            conn.sendall(TCP_WELCOME)
                        except OSError:
                            continue
                    meter.stream_sent(len(TCP_WELCOME))
                    thread = threading.Thread(target=serve, args=(peer,), daemon=True)
                    thread.start()
                    threads.append(thread)
            finally:
                stop.set()
                with peers_lock:
                    remaining = list(peers)
                for peer in remaining:
                    # Unblocks a sendall stuck on a member that stopped reading.
                    with contextlib.suppress(OSError):
                        peer.conn.shutdown(socket.SHUT_RDWR)
                for thread in threads:
                    thread.join(timeout=1.0)
                for peer in remaining:
                    peer.conn.close()

    def connect_member(self, args: MemberArgs, meter: SocketMeter) -> MemberLink:
        if args.loss_percent:
            raise UnsupportedOption("tcp-relay can only experience loss in the kernel")
        nodelay = _nodelay(args.options)
        sock = socket.create_connection(args.relay, timeout=args.connect_timeout_s)
        try:
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
            link = _TcpLink(sock, meter)
            link.wait_welcome(args.connect_timeout_s)
        except BaseException:
            sock.close()
            raise
        return link


PLAIN_UDP = PlainUdpSystem()
TCP_RELAY = TcpRelaySystem()
