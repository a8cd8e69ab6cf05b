"""What the socket shell costs per datagram and per wake-up, with the protocol taken out.

A :class:`~udpchat.driver.Driver` runs an echo endpoint (it answers every datagram with one of
the same size and does nothing else) on a real UDP socket; another process sends it
``--rate`` datagrams a second, from ``--peers`` addresses, spread evenly, as a thousand idle
members' heartbeats reach a relay (``--rate 1000``), and reads the echoes. What the driver's
thread spends (``time.thread_time``: its waits are not work) per datagram is then the shell's
cost alone: the wait, the read into the inbox, the locks, the turn, the sends.

    python bench/scripts/shell_cost.py --rate 1000 --seconds 3 --rounds 3
    PYTHONPATH=/path/to/checkout python bench/scripts/shell_cost.py --profile

Output per round: datagrams received, turns, datagrams per turn, µs of the driver thread's
CPU per datagram and per turn; then the same traffic echoed by a bare loop (``epoll.poll``,
``recvfrom`` until empty, ``sendto``: the floor under any Python shell on this machine as it
is then), the rounds of both alternating; then the medians, and the driver's cost as a
multiple of the bare loop's. ``--profile`` prints a cProfile
of the driver thread (thread CPU clock, sorted by tottime). A diagnostic: nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import threading
import time
from typing import Any

from udpchat.driver import Driver
from udpchat.endpoint import Address
from udpchat.transport import UdpTransport
from udpchat_bench.floor import MIN_SECONDS, FloorResult, bare_loop, measure_thread


class Echo:
    """Answers each datagram with itself; no timer but the one ``timer_every`` asks for."""

    def __init__(self, timer_every: float) -> None:
        self._out: list[tuple[bytes, Address]] = []
        self._every = timer_every
        self._next = time.monotonic() + timer_every if timer_every > 0 else None

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self._out.append((data, addr))

    def datagrams_to_send(
        self, now: float, limit: int | None = None
    ) -> list[tuple[bytes, Address]]:
        if limit is None or len(self._out) <= limit:
            out, self._out = self._out, []
            return out
        out, self._out = self._out[:limit], self._out[limit:]
        return out

    def next_timer(self) -> float | None:
        return self._next

    def handle_timer(self, now: float) -> None:
        if self._next is not None:
            self._next = now + self._every


def one_round(
    rate: float, seconds: float, peers: int, timer: float, profile: bool
) -> dict[str, float]:
    transport = UdpTransport.bind("127.0.0.1", 0)
    endpoint = Echo(timer)
    turns = 0
    driver: Driver[None] = Driver(
        endpoint, transport, label="Echo", log=logging.getLogger("shell_cost"), name="echo",
        take=lambda now: [], deliver=lambda items: None, send_batch=64,
    )
    turn = driver._turn
    profiler = cProfile.Profile(time.thread_time) if profile else None

    def counted_turn(*args: Any) -> None:
        nonlocal turns
        turns += 1
        turn(*args)

    driver._turn = counted_turn  # type: ignore[method-assign,assignment]
    serve = driver.run

    def run() -> None:
        if profiler is not None:
            profiler.enable()
        serve()
        if profiler is not None:
            profiler.disable()

    thread = threading.Thread(target=run, name="driver")
    thread.start()
    try:
        row = row_of(
            measure_thread(
                thread, transport.local_address[1], rate, seconds, peers,
                lambda: (driver.received, turns),
            )
        )
    finally:
        driver.stop()
        driver.join()
        transport.close()
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(18)
    return row


def bare_round(rate: float, seconds: float, peers: int) -> dict[str, float]:
    """The same traffic echoed by the least a Python loop can do (``udpchat_bench.floor``)."""
    return row_of(bare_loop(rate, seconds, peers))


def row_of(result: FloorResult) -> dict[str, float]:
    return {
        "received": result.received,
        "turns": result.turns,
        "per_turn_dg": result.per_turn,
        "us_per_dg": result.us_per_datagram,
        "us_per_turn": result.us_per_turn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--timer", type=float, default=0.0, help="a periodic timer, in s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    ns = parser.parse_args()
    if ns.seconds <= MIN_SECONDS:
        parser.error(f"--seconds must be over {MIN_SECONDS:g} (the start and end are not counted)")
    rows, bare = [], []
    for _ in range(1 if ns.profile else ns.rounds):
        row = one_round(ns.rate, ns.seconds, ns.peers, ns.timer, ns.profile)
        rows.append(row)
        print("driver  " + "  ".join(f"{k} {v:.1f}" for k, v in row.items()))
        if not ns.profile:  # alternately, so that both see the machine as it is
            bare.append(bare_round(ns.rate, ns.seconds, ns.peers))
            print("bare    " + "  ".join(f"{k} {v:.1f}" for k, v in bare[-1].items()))
    if len(rows) > 1:
        for name, runs in (("driver", rows), ("bare", bare)):
            print(f"median {name}  " + "  ".join(
                f"{k} {statistics.median(r[k] for r in runs):.1f}" for k in runs[0]
            ))
        driver = statistics.median(r["us_per_dg"] for r in rows)
        floor = statistics.median(r["us_per_dg"] for r in bare)
        print(f"the driver costs {driver / floor:.2f} times the bare loop per datagram")


if __name__ == "__main__":
    main()
