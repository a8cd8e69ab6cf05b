"""What the room store adds to the relay's work per delivery: memory against SQLite.

The sans-I/O relay core fans a sender's messages out to the other members on the simulated
network (udpchat.sim, virtual clock, no sockets); only the relay's own calls are timed (wall
time around each call, so the members' work is left out; CPU-time clocks cost more than
these calls on some machines), and within them the room log's commits, which are the whole
difference between the stores. Messages are spaced so that each serving turn holds about
one (``--gap``): one SQLite commit per message, the store's worst case. Runs alternate
between the stores; the best run of each is reported (on a shared machine, other load only
ever adds time), with the commits' share.

    python bench/scripts/store_cost.py --members 10 --messages 1000 --runs 5

A diagnostic: figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.room_log import RoomLog
from udpchat.sim import PathModel, SimNetwork
from udpchat.stores import open_store, parse_store

RELAY: Address = ("127.0.0.1", 9000)
UNLIMITED = 1_000_000


class Timed:
    """The relay core with the CPU time of its calls added up."""

    def __init__(self, core: RelayCore) -> None:
        self.core = core
        self.cpu = 0.0

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        start = time.perf_counter()
        self.core.receive_datagram(data, addr, now)
        self.cpu += time.perf_counter() - start

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        start = time.perf_counter()
        out = self.core.datagrams_to_send(now)
        self.cpu += time.perf_counter() - start
        return out

    def next_timer(self) -> float | None:
        return self.core.next_timer()

    def handle_timer(self, now: float) -> None:
        start = time.perf_counter()
        self.core.handle_timer(now)
        self.cpu += time.perf_counter() - start


class TimedCommits:
    """The room log, the time its commits take added up (the part of the relay's work that
    is the store's: appends cost the same in memory)."""

    def __init__(self, log: RoomLog) -> None:
        self.log = log
        self.spent = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)

    def commit(self) -> None:
        start = time.perf_counter()
        self.log.commit()
        self.spent += time.perf_counter() - start


def joined(session: ClientSession) -> Callable[[], bool]:
    return lambda: session.state is SessionState.JOINED


def run(store: str, members: int, messages: int, gap: float, seed: int) -> tuple[float, float, int]:
    """(relay us per delivery, of which commits, deliveries) while ``messages`` fan out."""
    config = replace(RelayConfig(), flood_burst=UNLIMITED, flood_rate=float(UNLIMITED))
    rng = random.Random(seed).randbytes
    log = open_store(parse_store(store), config.history, rng)
    commits = TimedCommits(log)
    core = RelayCore(
        config,
        0.0,
        rng,
        static_key=bytes(range(32)),
        room_log=commits,
    )
    relay = Timed(core)
    net = SimNetwork(seed=seed, default=PathModel(delay=0.0005))
    net.attach(RELAY, relay)
    sessions = []
    for i in range(members):
        session = ClientSession(ClientConfig(f"m{i}", RELAY, pace_rate=0), rng, net.now)
        net.attach(("127.0.0.1", 40000 + i), session)
        sessions.append(session)
        session.connect(net.now)
        if not net.run_until(joined(session), 5):
            raise RuntimeError(f"member {i} did not join")
    net.run(1.0)
    relay.cpu, delivered = 0.0, core.stats.deliveries
    commits.spent = 0.0
    sender = sessions[0]
    for i in range(messages):
        sender.say(f"message {i:06d} " + "x" * 80, net.now)
        net.run(gap)
    net.run(2.0)
    close = getattr(log, "close", None)
    if close is not None:
        close()
    count = max(1, core.stats.deliveries - delivered)
    return relay.cpu / count * 1e6, commits.spent / count * 1e6, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--gap", type=float, default=0.002, help="seconds between messages")
    parser.add_argument("--runs", type=int, default=5)
    ns = parser.parse_args()
    results: dict[str, list[tuple[float, float, int]]] = {"memory": [], "sqlite": []}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(ns.runs):
            path = Path(tmp) / f"room-{index}.sqlite3"
            for name, url in (("memory", "memory:"), ("sqlite", f"sqlite:{path}")):
                total, committing, count = run(url, ns.members, ns.messages, ns.gap, index + 1)
                results[name].append((total, committing, count))
                print(
                    f"run {index + 1} {name:<6} {total:6.1f} us relay time per delivery,"
                    f" {committing:5.2f} us of it committing ({count} deliveries)"
                )
    # The least disturbed run of each: on a shared machine, noise only ever adds time.
    memory = min(total for total, _, _ in results["memory"])
    sqlite = min(total for total, _, _ in results["sqlite"])
    commit = min(committing for _, committing, _ in results["sqlite"])
    print(
        f"best of {ns.runs} runs, {ns.members} members, {ns.messages} messages, one per turn:"
        f" memory {memory:.1f} us, sqlite {sqlite:.1f} us per delivery"
        f" ({(sqlite / memory - 1) * 100:+.1f}%); the commits: {commit:.2f} us per delivery"
        f" ({commit / memory * 100:.1f}% of the memory relay's time)"
    )


if __name__ == "__main__":
    main()
