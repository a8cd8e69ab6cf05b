"""CPU of one join into a large room, stage by stage, in one process (no sockets).

The relay core and real client sessions (``ClientSession``) exchange their datagrams by
hand, as ``udpchat load`` members would over loopback, and each stage of a join is timed in
this thread's CPU (``time.thread_time``), so that other work on the machine does not count:

* ``member HELLO``: the member starts joining (its HELLO, padded to 1,200 bytes);
* ``relay HELLO``: the relay reads HELLO and writes its CHALLENGE (cookie);
* ``member CHALLENGE``: the member reads the CHALLENGE and writes its JOIN (Noise message 1);
* ``relay JOIN``: the relay reads the JOIN (cookie, Noise) and writes ACCEPT (Noise message
  2), WELCOME and the history;
* ``member ACCEPT``: the member reads the ACCEPT;
* ``member WELCOME``: the member reads WELCOME (and the rest of that burst), and acknowledges.

    python bench/scripts/join_cost.py --members 1000 --probes 200 --rounds 3

The room is first filled with ``--members`` members (their fan-out is read and dropped: only
the joins are timed); then ``--probes`` members join one at a time, each timed, and leave
again so the room stays at its size. Medians over the probes, then the median of the rounds.
A diagnostic: figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import statistics
import time
from collections.abc import Callable

from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore

RELAY = ("127.0.0.1", 9000)
STAGES = (
    "member HELLO",
    "relay HELLO",
    "member CHALLENGE",
    "relay JOIN",
    "member ACCEPT",
    "member WELCOME",
)


def _rng(seed: int) -> Callable[[int], bytes]:
    source = random.Random(seed)
    return source.randbytes


class Room:
    """A relay core and its members, datagrams carried by hand."""

    def __init__(self, members: int, seed: int) -> None:
        config = RelayConfig(
            handshake_burst=1_000_000,
            handshake_rate=1e9,
            max_members=members + 1024,
            max_members_per_host=members + 1024,
            max_members_per_network=members + 1024,
            admission_burst=1_000_000,
            admission_rate=1e9,
            heartbeat=1.0,
        )
        self.now = 1000.0
        self.relay = RelayCore(config, self.now, _rng(seed))
        self.seed = seed
        self.count = 0
        self.profiled = ""  # the stage to profile ("": all)

    def session(self, nick: str) -> tuple[ClientSession, tuple[str, int]]:
        self.count += 1
        addr = ("127.0.0.1", 10_000 + self.count)
        config = ClientConfig(nick=nick, server=RELAY)
        return ClientSession(config, _rng(self.seed * 100_000 + self.count), self.now), addr

    def to_relay(self, client: ClientSession, addr: tuple[str, int]) -> None:
        for data, _ in client.datagrams_to_send(self.now):
            self.relay.receive_datagram(data, addr, self.now)

    def from_relay(self) -> dict[tuple[str, int], list[bytes]]:
        out: dict[tuple[str, int], list[bytes]] = {}
        for data, addr in self.relay.datagrams_to_send(self.now):
            out.setdefault(addr, []).append(data)
        return out

    def fill(self, members: int) -> None:
        for i in range(members):
            client, addr = self.session(f"m{i:05d}")
            client.connect(self.now)
            for _ in range(3):  # HELLO, JOIN, and the WELCOME's ACK
                self.to_relay(client, addr)
                for data in self.from_relay().get(addr, []):
                    client.receive_datagram(data, RELAY, self.now)
            assert client.state is SessionState.JOINED, client.state
            self.now += 0.001
        self.now += 5.0  # every batch window over: the fills' notices go out
        self.relay.handle_timer(self.now)
        self.from_relay()

    def probe(self, nick: str, profile: cProfile.Profile | None) -> dict[str, float]:
        client, addr = self.session(nick)
        spent: dict[str, float] = {}
        clock = time.thread_time

        def stage(name: str, work: Callable[[], object]) -> object:
            profiled = profile is not None and self.profiled in ("", name)
            if profiled:
                profile.enable()  # type: ignore[union-attr]
            start = clock()
            result = work()
            spent[name] = 1e6 * (clock() - start)
            if profiled:
                profile.disable()  # type: ignore[union-attr]
            return result

        now, relay = self.now, self.relay

        def member_out() -> list[tuple[bytes, tuple[str, int]]]:
            return client.datagrams_to_send(now)

        def relay_in(datagrams: list[tuple[bytes, tuple[str, int]]]) -> Callable[[], object]:
            def run() -> list[tuple[bytes, tuple[str, int]]]:
                for data, _ in datagrams:
                    relay.receive_datagram(data, addr, now)
                return [(d, a) for d, a in relay.datagrams_to_send(now) if a == addr]

            return run

        def member_in(datagrams: list[tuple[bytes, tuple[str, int]]]) -> Callable[[], object]:
            def run() -> list[tuple[bytes, tuple[str, int]]]:
                for data, _ in datagrams:
                    client.receive_datagram(data, RELAY, now)
                return client.datagrams_to_send(now)

            return run

        hello = stage("member HELLO", lambda: (client.connect(now), member_out())[1])
        challenge = stage("relay HELLO", relay_in(hello))  # type: ignore[arg-type]
        join = stage("member CHALLENGE", member_in(challenge))  # type: ignore[arg-type]
        answer = stage("relay JOIN", relay_in(join))  # type: ignore[arg-type]
        assert isinstance(answer, list) and answer
        stage("member ACCEPT", member_in(answer[:1]))
        acks = stage("member WELCOME", member_in(answer[1:]))
        assert client.state is SessionState.JOINED, client.state
        relay_in(acks)()  # type: ignore[arg-type]
        # leave again, so that the room keeps its size; the notices go out unread
        client.quit("bye", now)
        relay_in(client.datagrams_to_send(now))()
        self.now += 5.0
        relay.handle_timer(self.now)
        self.from_relay()
        return spent


def run_round(
    members: int, probes: int, seed: int, profile: cProfile.Profile | None, stage: str = ""
) -> dict[str, float]:
    room = Room(members, seed)
    room.fill(members)
    room.profiled = stage
    rows = [room.probe(f"p{seed}x{i:04d}", profile) for i in range(probes)]
    return {name: statistics.median(row[name] for row in rows) for name in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile the timed stages")
    parser.add_argument("--stage", default="", choices=("", *STAGES), help="profile this one")
    parser.add_argument("--sort", default="tottime", help="pstats order (tottime, cumulative)")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    rounds = [
        run_round(args.members, args.probes, 1 + r, profile, args.stage) for r in range(args.rounds)
    ]
    result = {name: round(statistics.median(r[name] for r in rounds), 1) for name in STAGES}
    result["relay"] = round(result["relay HELLO"] + result["relay JOIN"], 1)
    result["member"] = round(sum(result[n] for n in STAGES if n.startswith("member")), 1)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"CPU µs per join into a room of {args.members} (median of {args.rounds} rounds "
              f"of {args.probes} probes' medians)")
        print("| stage | µs |\n|---|---:|")
        for name, value in result.items():
            print(f"| {name} | {value} |")
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
