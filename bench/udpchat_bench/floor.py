"""What a bare Python socket loop costs on this machine now, on a relay's heartbeat traffic.

An idle room's relay does little per heartbeat, and what it costs moves threefold with the
machine (a quiet day against a busy one) while the code stays the same. So the load
benchmark measures, in the same run, a bare loop on the same number of datagrams:
``epoll.poll``, then ``recvfrom`` until the socket is empty, and a ``sendto`` back for every
``answer_every``-th datagram, with no protocol, no lock and no allocation of its own.
Another process sends the datagrams from ``peers`` sockets, spread evenly over each second.
The loop thread's CPU (its waits are not work) is the system's wake-up, the socket calls and
the interpreter's turn: what a Python loop that wakes for each datagram as it comes (as the
relay does, so that a chat line is not kept waiting) cannot go below. A loop that slept
between turns to read several datagrams per wake-up would cost less, and delay them.

``bench/scripts/shell_cost.py`` compares the driver with the same floor.
"""

from __future__ import annotations

import multiprocessing as mp
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MIN_SECONDS", "FloorResult", "bare_loop", "blaster", "measure_thread", "thread_cpu_s",
]

PAYLOAD_SIZE = 60  # about a heartbeat's size (an ACK or PING with its header and tag)
SKIP_S = 0.3  # not counted after the sender starts, nor before it ends: steady traffic only
MIN_SECONDS = 2 * SKIP_S + 0.2  # a run shorter than this has too little middle to count
START_TIMEOUT_S = 30.0  # for the sender process to start and open its sockets


@dataclass(frozen=True)
class FloorResult:
    """A loop thread's cost over the measured window."""

    received: int
    turns: int
    cpu_s: float
    seconds: float

    @property
    def us_per_datagram(self) -> float:
        return 1e6 * self.cpu_s / max(self.received, 1)

    @property
    def us_per_turn(self) -> float:
        return 1e6 * self.cpu_s / max(self.turns, 1)

    @property
    def per_turn(self) -> float:
        return self.received / max(self.turns, 1)

    @property
    def cpu_pct(self) -> float:
        """% of one core over the window."""
        return 100 * self.cpu_s / self.seconds if self.seconds > 0 else 0.0


def blaster(port: int, rate: float, seconds: float, peers: int, ready: Any) -> None:
    """Send ``rate`` datagrams a second to 127.0.0.1:``port`` from ``peers`` sockets for
    ``seconds``, reading and dropping what comes back (a process's target). ``ready`` is
    set once the sockets are open, when the sending starts."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(peers)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    payload = b"p" * PAYLOAD_SIZE
    ready.set()
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        socks[i % peers].sendto(payload, ("127.0.0.1", port))
        if i % 64 == 0:
            for r in socks:
                try:
                    while True:
                        r.recv(2048)
                except BlockingIOError:
                    pass
    for s in socks:
        s.close()


def thread_cpu_s(ident: int | None) -> float:
    """The CPU clock of thread ``ident`` (``Thread.ident``), in seconds."""
    assert ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def measure_thread(
    thread: threading.Thread,
    port: int,
    rate: float,
    seconds: float,
    peers: int,
    counts: Callable[[], tuple[int, int]],
) -> FloorResult:
    """Send to ``port`` for ``seconds`` from another process and measure ``thread`` (the
    loop serving it) over the middle of it: its CPU, and the growth of ``counts()``
    (datagrams received, turns)."""
    _check_seconds(seconds)
    ready = mp.Event()
    proc = mp.Process(target=blaster, args=(port, rate, seconds, peers, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the sender did not start within {START_TIMEOUT_S:g} s")
        time.sleep(SKIP_S)
        received0, turns0 = counts()
        cpu0, t0 = thread_cpu_s(thread.ident), time.monotonic()
        time.sleep(seconds - 2 * SKIP_S)
        cpu1, t1 = thread_cpu_s(thread.ident), time.monotonic()
        received1, turns1 = counts()
    finally:
        proc.join(seconds + 10)
        if proc.is_alive():
            proc.kill()
    return FloorResult(received1 - received0, turns1 - turns0, cpu1 - cpu0, t1 - t0)


def bare_loop(
    rate: float, seconds: float, peers: int = 50, answer_every: int = 1
) -> FloorResult:
    """``rate`` datagrams a second served by the bare loop, which answers every
    ``answer_every``-th one (a relay of idle members answers every other heartbeat)."""
    if rate <= 0 or peers < 1 or answer_every < 1:
        raise ValueError("need rate > 0, peers >= 1 and answer_every >= 1")
    _check_seconds(seconds)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    stop = threading.Event()
    turns = received = 0

    def run() -> None:
        nonlocal turns, received
        epoll = select.epoll()
        epoll.register(sock.fileno(), select.EPOLLIN)
        try:
            while not stop.is_set():
                if not epoll.poll(0.05):
                    continue
                turns += 1
                while True:
                    try:
                        data, addr = sock.recvfrom(2048)
                    except BlockingIOError:
                        break
                    received += 1
                    if received % answer_every == 0:
                        sock.sendto(data, addr)
        finally:
            epoll.close()

    thread = threading.Thread(target=run, name="bare-loop", daemon=True)
    thread.start()
    try:
        return measure_thread(
            thread, sock.getsockname()[1], rate, seconds, peers, lambda: (received, turns)
        )
    finally:
        stop.set()
        thread.join()
        sock.close()


def _check_seconds(seconds: float) -> None:
    if seconds <= MIN_SECONDS:
        raise ValueError(f"seconds must be over {MIN_SECONDS:g}")
