"""The relay's CPU per datagram on its hot path, sans I/O: a SAY in, its fan-out out, ACKs in.

The relay core runs in this process with real client sessions (``ClientSession``) on a
virtual clock, and no socket. After the members joined (on the simulated network), this
script moves the bytes itself, in turns as ``udpchat.driver`` runs them: a turn hands the
relay what arrived, runs its timers if due, flushes its output, takes its reports and reads
its next timer. Only the relay's calls are timed (``time.thread_time``); the members' work is
not. Per chat message:

* the SAY turn: the sender's DATA in, the fan-out (and the poster's POSTED) out;
* one ACK turn per receiver's ACK (at chat rates each arrives on its own);
* the timer turns between messages (delayed ACKs, retransmission timers).

``--idle N`` measures instead the relay's CPU share with N idle members: their heartbeats
(PING, each in a turn of its own) and the relay's timers.

With ``--burst K``, K messages are said before the relay's turn (a busy room: several
events due to each member in one turn); the script then also counts the DATA datagrams
each receiver got per message. With ``--senders S``, the burst's messages come from S
members, one datagram each, all handled in the one turn (a busy room under ``udpchat
bench``'s fan-out load).

    python bench/scripts/relay_path_cost.py --receivers 2 9 --messages 2000 --rounds 3
    python bench/scripts/relay_path_cost.py --receivers 9 --burst 4
    python bench/scripts/relay_path_cost.py --receivers 9 --profile 25
    python bench/scripts/relay_path_cost.py --idle 1000 --seconds 10

Run it alternately from two checkouts (PYTHONPATH=...) to compare them: medians of the
rounds are printed. ``--profile N`` prints the top N functions (by own time) of a cProfile
of the relay's calls alone. A diagnostic: nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeVar

from udpchat import wire
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.sim import PathModel, SimNetwork

RELAY: Address = ("127.0.0.1", 9000)
UNLIMITED = 1_000_000
T = TypeVar("T")


LAST_KINDS: dict[str, int] = {}  # what the relay received in the last idle run, by kind


def print_profile(profiler: cProfile.Profile, top: int) -> None:
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    print(buffer.getvalue())


def joined(session: ClientSession) -> bool:
    return session.state is SessionState.JOINED


def member_addr(i: int) -> Address:
    return ("127.0.0.1", 40000 + i)


@dataclass
class Costs:
    """Thread CPU seconds of the relay's turns, by kind, and their counts."""

    say: float = 0.0
    says: int = 0
    ack: float = 0.0
    acks: int = 0
    timer: float = 0.0
    timers: int = 0
    data_to_receivers: int = 0
    deliveries: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class Room:
    """A relay core and its members, driven turn by turn."""

    def __init__(self, receivers: int, seed: int, profiler: cProfile.Profile | None) -> None:
        config = replace(
            RelayConfig(),
            flood_burst=UNLIMITED,
            flood_rate=float(UNLIMITED),
            handshake_burst=UNLIMITED,
            handshake_rate=float(UNLIMITED),
            admission_burst=UNLIMITED,
            admission_rate=float(UNLIMITED),
            max_members=UNLIMITED,
            max_members_per_host=UNLIMITED,
            max_members_per_network=UNLIMITED,
        )
        rng = random.Random(seed).randbytes
        self.core = RelayCore(config, 0.0, rng, static_key=bytes(range(32)))
        net = SimNetwork(seed=seed, default=PathModel(delay=0.0002))
        net.attach(RELAY, self.core)
        self.members: list[ClientSession] = []
        for i in range(receivers + 1):
            session = ClientSession(ClientConfig(f"m{i}", RELAY, pace_rate=0), rng, net.now)
            net.attach(member_addr(i), session)
            session.connect(net.now)
            self.members.append(session)
            if not net.run_until(partial(joined, session), 5):
                raise RuntimeError(f"member {i} did not join")
        net.run(2.0)  # notices out, everything acknowledged
        self.now = net.now
        self.timer = self.core.next_timer()
        self.profiler = profiler
        self.profiled = "all"  # or the one kind of turn profiled: say, ack, timer
        self.costs = Costs()
        for session in self.members:
            session.events()

    def _timed(self, call: Callable[[], T], kind: str) -> tuple[T, float]:
        profiler = self.profiler if self.profiled in ("all", kind) else None
        start = time.thread_time()
        if profiler is not None:
            profiler.enable()
        result = call()
        if profiler is not None:
            profiler.disable()
        return result, time.thread_time() - start

    def turn(
        self, batch: list[tuple[bytes, Address]], kind: str
    ) -> tuple[list[tuple[bytes, Address]], float]:
        """One serving turn, as the driver runs it; (output, relay CPU seconds)."""
        core, now, timer = self.core, self.now, self.timer

        def run() -> list[tuple[bytes, Address]]:
            for data, addr in batch:
                core.receive_datagram(data, addr, now)
            if timer is not None and timer <= now:
                core.handle_timer(now)
            out = core.datagrams_to_send(now)
            core.events()
            self.timer = core.next_timer()
            return out

        return self._timed(run, kind)

    def route(self, out: list[tuple[bytes, Address]]) -> None:
        """Hand the relay's output to the members (untimed)."""
        port0 = member_addr(0)[1]
        for data, addr in out:
            index = addr[1] - port0
            if index > 0:
                kind = wire.decode_datagram(data)
                if isinstance(kind, wire.Protected) and kind.kind is wire.DatagramType.DATA:
                    self.costs.data_to_receivers += 1
            self.members[index].receive_datagram(data, RELAY, self.now)

    def members_output(self) -> list[tuple[bytes, Address]]:
        """What the members send now (their due timers run first), tagged with their address."""
        out: list[tuple[bytes, Address]] = []
        for i, session in enumerate(self.members):
            timer = session.next_timer()
            if timer is not None and timer <= self.now:
                session.handle_timer(self.now)
            for data, _ in session.datagrams_to_send(self.now):
                out.append((data, member_addr(i)))
            session.events()
        return out

    def idle_until(self, end: float) -> None:
        """Let time pass to ``end``: the relay's and the members' timers, one turn each."""
        costs = self.costs
        while True:
            timers = [t for t in (s.next_timer() for s in self.members) if t is not None]
            if self.timer is not None:
                timers.append(self.timer)
            when = min(timers, default=None)
            if when is None or when > end:
                break
            self.now = max(self.now, when)
            incoming = self.members_output()
            self.relay_takes(incoming)
            if self.timer is not None and self.timer <= self.now:
                out, spent = self.turn([], "timer")
                costs.timer += spent
                costs.timers += 1
                self.route(out)
        self.now = end

    def relay_takes(self, incoming: list[tuple[bytes, Address]]) -> None:
        """Datagrams from members, one turn each (at chat rates each arrives on its own)."""
        costs = self.costs
        for data, addr in incoming:
            envelope = wire.decode_datagram(data)
            kind = envelope.kind.name if isinstance(envelope, wire.Protected) else "other"
            costs.by_kind[kind] = costs.by_kind.get(kind, 0) + 1
            out, spent = self.turn([(data, addr)], "ack" if kind == "ACK" else "timer")
            if kind == "ACK":
                costs.ack += spent
                costs.acks += 1
            else:
                costs.timer += spent
                costs.timers += 1
            self.route(out)

    def chat(self, messages: int, burst: int, gap: float, senders: int) -> Costs:
        delivered = self.core.stats.deliveries
        text = "x" * 90
        for i in range(0, messages, burst):
            for j in range(burst):
                self.members[j % senders].say(f"{i + j:06d} {text}", self.now)
            says = [
                (d, member_addr(k))
                for k in range(min(senders, burst))
                for d, _ in self.members[k].datagrams_to_send(self.now)
            ]
            out, spent = self.turn(says, "say")
            self.costs.say += spent
            self.costs.says += burst
            self.route(out)
            self.idle_until(self.now + gap)
        self.idle_until(self.now + 2.0)
        self.costs.deliveries = self.core.stats.deliveries - delivered
        return self.costs


def idle(
    members: int, seconds: float, seed: int, profiler: cProfile.Profile | None = None
) -> tuple[float, int]:
    """(% of a core the relay spends on ``members`` idle members, heartbeats handled)."""
    room = Room(members - 1, seed, None)
    room.idle_until(room.now + 1.0)  # heartbeats spread out
    room.costs = Costs()
    room.profiler = profiler
    room.idle_until(room.now + seconds)
    c = room.costs
    LAST_KINDS.clear()
    LAST_KINDS.update(c.by_kind)
    return (c.ack + c.timer) / seconds * 100, c.by_kind.get("PING", 0)


def run(
    receivers: int,
    messages: int,
    burst: int,
    gap: float,
    seed: int,
    profiler: cProfile.Profile | None = None,
    profiled: str = "all",
    senders: int = 1,
) -> Costs:
    room = Room(receivers, seed, profiler)
    room.profiled = profiled
    return room.chat(messages, burst, gap, senders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receivers", type=int, nargs="+", default=[2, 9])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=1, help="messages said per relay turn")
    parser.add_argument(
        "--senders", type=int, default=1, help="members the burst's messages come from"
    )
    parser.add_argument("--gap", type=float, default=0.02, help="virtual seconds between turns")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="top N functions by own time")
    parser.add_argument(
        "--turns", choices=("all", "say", "ack", "timer"), default="all", help="what to profile"
    )
    parser.add_argument(
        "--idle", type=int, default=0, help="instead: this many idle members, heartbeats only"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="virtual seconds idle")
    ns = parser.parse_args()
    if ns.idle:
        shares = [idle(ns.idle, ns.seconds, index + 1) for index in range(ns.rounds)]
        room_kinds = LAST_KINDS
        share = statistics.median(s for s, _ in shares)
        pings = shares[0][1]
        print(
            f"{ns.idle} idle members: relay {share:.2f}% of a core (median of {ns.rounds}),"
            f" {pings / ns.seconds:.0f} PINGs/s, {share / 100 * ns.seconds / pings * 1e6:.1f} µs"
            f" per PING; received {dict(sorted(room_kinds.items()))}"
        )
        if ns.profile:
            profiler = cProfile.Profile(time.thread_time)
            idle(ns.idle, ns.seconds, 1, profiler)
            print_profile(profiler, ns.profile)
        return
    for receivers in ns.receivers:
        rows: list[tuple[float, float, float, float, float]] = []
        last = Costs()
        for index in range(ns.rounds):
            c = run(receivers, ns.messages, ns.burst, ns.gap, index + 1, senders=ns.senders)
            last = c
            per_msg = (c.say + c.ack + c.timer) / c.says
            rows.append((
                c.say / c.says * 1e6,
                c.ack / max(1, c.acks) * 1e6,
                c.timer / c.says * 1e6,
                per_msg * 1e6,
                (c.say + c.ack + c.timer) / max(1, c.deliveries) * 1e6,
            ))
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(
            f"{receivers} receivers, burst {ns.burst}: µs relay CPU per SAY turn {med[0]:.1f}"
            f" (per message), per ACK turn {med[1]:.1f}, timer turns {med[2]:.1f} per message;"
            f" total {med[3]:.1f} per message, {med[4]:.1f} per delivery"
            f" (medians of {ns.rounds});"
            f" receivers' DATA per message {last.data_to_receivers / last.says / receivers:.2f},"
            f" relay received {dict(sorted(last.by_kind.items()))} + {last.says} SAYs"
        )
    if ns.profile:
        profiler = cProfile.Profile(time.thread_time)
        run(ns.receivers[-1], ns.messages, ns.burst, ns.gap, 1, profiler, ns.turns, ns.senders)
        print_profile(profiler, ns.profile)


if __name__ == "__main__":
    main()
