"""How long a member of a shared room takes to move when its relay dies, on a lossy network.

Sans I/O, on the virtual clock (``udpchat.sim``): three relay cores on one in-memory shared
room (``udpchat.relay.memory_shared``, as three relays on one Redis), members spread over
them, each listing its own relay first. Once all have joined (on a clean network), each says
a line every ``--every`` seconds through paths that lose ``--loss`` of the datagrams each way
(with ``udpchat demo``'s 2 ms +/- 5 ms of delay). Relay 0 dies mid-chat; the figure, per
member of relay 0, is the time from its death to the member's WELCOME from the relay it
moved to, and of that, the part after the member noticed the silence (the handshake with
the new relay). ``--runs`` seeds, all moves pooled. ``--far S`` puts the surviving relays
S seconds farther (each way) from the dead relay's members than it was: a move to a relay
whose round trip the old one's does not predict.

    python bench/scripts/move_time.py --runs 200 --loss 0.25

Run it from two checkouts (PYTHONPATH=...) to compare them. A diagnostic: nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import statistics

from udpchat import events as ev
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.memory_shared import SharedRoom
from udpchat.sim import PathModel, SimNetwork

TIME = 1_790_000_000
RELAYS: tuple[Address, ...] = tuple((f"10.0.0.{i + 1}", 4000) for i in range(3))
STEP = 0.01  # events are stamped to this resolution
CONFIG = RelayConfig(timeout=10.0, flood_burst=100, flood_rate=100.0)


def seeded(seed: int) -> random.Random:
    return random.Random(seed)


def one_run(
    seed: int, members: int, loss: float, every: float, far: float = 0.0
) -> list[tuple[float, float]]:
    """(death to WELCOME, silence noticed to WELCOME) for each member of the dead relay."""
    path = PathModel(loss=loss, delay=0.002, jitter=0.005)
    farther = PathModel(loss=loss, delay=0.002 + far, jitter=0.005)
    net = SimNetwork(seed=seed, default=PathModel(delay=0.002, jitter=0.005))
    room = SharedRoom(CONFIG.history, seeded(seed).randbytes)
    for i, address in enumerate(RELAYS):
        static = bytes((seed * 7 + i * 31 + j) % 256 for j in range(32))
        core = RelayCore(
            CONFIG, net.now, seeded(seed * 10 + i).randbytes, wall_offset=TIME,
            static_key=static, room_log=room.connect(),
        )
        net.attach(address, core)
    sessions: list[ClientSession] = []
    for i in range(members):
        own = i % len(RELAYS)
        order = (*RELAYS[own:], *RELAYS[:own])
        config = ClientConfig(f"m{i}", order[0], fallbacks=order[1:])
        session = ClientSession(config, seeded(seed * 100 + i).randbytes, net.now, wall_offset=TIME)
        net.attach((f"10.1.0.{i + 1}", 5000), session)
        session.connect(net.now)
        sessions.append(session)
    if not net.run_until(lambda: all(s.state is SessionState.JOINED for s in sessions), 60):
        raise SystemExit(f"seed {seed}: not everyone joined")
    net.set_default(path)  # joined on a clean network: the loss is for the chat and the moves
    if far:
        for i, session in enumerate(sessions):
            member = (f"10.1.0.{i + 1}", 5000)
            for relay in RELAYS[1:]:
                if session.server == RELAYS[0]:  # the dead relay's members move far
                    net.set_path(member, relay, farther)
                    net.set_path(relay, member, farther)
    ticks = int(6.0 / every)
    steps = max(1, round(every / STEP))
    died: float | None = None
    victims: list[ClientSession] = []
    stamped: dict[int, list[tuple[float, ev.ClientEvent]]] = {id(s): [] for s in sessions}

    def step() -> None:
        net.run(STEP)
        for session in sessions:
            stamped[id(session)].extend((net.now, e) for e in session.events())

    for tick in range(ticks):
        for session in sessions:
            session.say(f"{session.nick} {tick}", net.now)
        for _ in range(steps):
            step()
        if tick == ticks // 3:
            net.detach(RELAYS[0])
            died = net.now
            victims = [s for s in sessions if s.server == RELAYS[0]]
    assert died is not None
    for _ in range(round(30 / STEP)):
        if all(s.server != RELAYS[0] and s.state is SessionState.JOINED for s in victims):
            break
        step()
    times = []
    for session in victims:
        moved_at: float | None = None
        for when, event in stamped[id(session)]:
            if isinstance(event, ev.RelayMoved) and moved_at is None and when >= died:
                moved_at = when
            elif isinstance(event, ev.Welcomed) and moved_at is not None:
                times.append((when - died, when - moved_at))
                break
        else:
            raise SystemExit(f"seed {seed}: {session.nick} did not move")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--members", type=int, default=6)
    parser.add_argument("--loss", type=float, default=0.25)
    parser.add_argument("--every", type=float, default=0.1, help="seconds between a member's lines")
    parser.add_argument(
        "--far", type=float, default=0.0,
        help="seconds of delay each way added between relay 0's members and the other relays",
    )
    options = parser.parse_args()
    moves: list[tuple[float, float]] = []
    for seed in range(options.runs):
        moves.extend(one_run(seed, options.members, options.loss, options.every, options.far))
    total = sorted(m[0] for m in moves)
    handshake = sorted(m[1] for m in moves)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    farther = f", the other relays {options.far * 1000:g} ms farther" if options.far else ""
    print(f"{len(moves)} moves at {options.loss:.0%} loss ({options.runs} runs{farther})")
    for name, values in (("death to WELCOME", total), ("silence to WELCOME", handshake)):
        print(
            f"  {name}: median {statistics.median(values):.2f} s, p90 {pct(values, 0.9):.2f} s,"
            f" p99 {pct(values, 0.99):.2f} s, max {values[-1]:.2f} s,"
            f" over 3 s: {sum(v > 3.0 for v in values)}"
        )


if __name__ == "__main__":
    main()
