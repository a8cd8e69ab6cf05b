"""CPU of one join into a large room, stage by stage, in one process (no sockets).

The relay core and real client sessions (``ClientSession``) exchange their datagrams by
hand, as ``udpchat load`` members would over loopback, and each stage of a join is timed in
this thread's CPU (``time.thread_time``), so that other work on the machine does not count:

* ``member HELLO``: the member starts joining (its HELLO, padded to 1,200 bytes);
* ``member waiting``: its timer while the HELLO is on its way (the JOIN's ephemeral key);
* ``relay HELLO``: the relay reads HELLO and writes its CHALLENGE (cookie);
* ``member CHALLENGE``: the member reads the CHALLENGE and writes its JOIN (Noise message 1);
* ``relay JOIN``: the relay reads the JOIN (cookie, Noise) and writes ACCEPT (Noise message
  2), WELCOME and the history;
* ``member ACCEPT``: the member reads the ACCEPT;
* ``member WELCOME``: the member reads WELCOME (and the rest of that burst), and acknowledges;
* ``relay between``: the relay's timer once the ACCEPT has gone (the next ephemeral key).

The waiting stages are work off the join's path: the other side is working meanwhile.

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
from udpchat.relay_server import SEND_BATCH

RELAY = ("127.0.0.1", 9000)
STAGES = (
    "member HELLO",
    "member waiting",
    "relay HELLO",
    "member CHALLENGE",
    "relay JOIN",
    "member ACCEPT",
    "member WELCOME",
    "relay between",
)
OFF_PATH = ("member waiting", "relay between")


def _rng(seed: int) -> Callable[[int], bytes]:
    source = random.Random(seed)
    return source.randbytes


class Room:
    """A relay core and its members, datagrams carried by hand; the members answer the
    relay (ACKs, heartbeats) as over loopback, untimed."""

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
        self.members: dict[tuple[str, int], ClientSession] = {}

    def session(self, nick: str) -> tuple[ClientSession, tuple[str, int]]:
        self.count += 1
        addr = ("127.0.0.1", 10_000 + self.count)
        config = ClientConfig(nick=nick, server=RELAY)
        return ClientSession(config, _rng(self.seed * 100_000 + self.count), self.now), addr

    def pump(self, touched: set[tuple[str, int]] | None = None) -> None:
        """Carry datagrams both ways until nobody has anything to send (only members that
        received something, or ``touched`` ones, can have)."""
        relay, now, members = self.relay, self.now, self.members
        touched = set(touched or ())
        for _ in range(100):
            out = relay.datagrams_to_send(now)
            for data, addr in out:
                member = members.get(addr)
                if member is not None:
                    member.receive_datagram(data, RELAY, now)
                    touched.add(addr)
            sent = 0
            for addr in touched:
                for data, _ in members[addr].datagrams_to_send(now):
                    relay.receive_datagram(data, addr, now)
                    sent += 1
            touched = set()
            if not out and not sent:
                return

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Let time pass: every timer that falls due runs, and what it sends is carried."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            timer = self.relay.next_timer()
            if timer is not None and timer <= self.now:
                self.relay.handle_timer(self.now)
            due: set[tuple[str, int]] = set()
            for addr, member in self.members.items():
                at = member.next_timer()
                if at is not None and at <= self.now:
                    member.handle_timer(self.now)
                    due.add(addr)
            self.pump(due)

    def fill(self, members: int) -> None:
        for i in range(members):
            client, addr = self.session(f"m{i:05d}")
            self.members[addr] = client
            client.connect(self.now)
            self.pump({addr})
            assert client.state is SessionState.JOINED, client.state
            if i % 50 == 49:
                self.advance(0.05)
        self.advance(2.0)  # every batch window over, the room settled

    def probe(
        self, nick: str, profile: cProfile.Profile | None, fanout: bool
    ) -> dict[str, float]:
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
                # as the relay's driver: one slice at a time, until the newcomer's are out
                mine: list[tuple[bytes, tuple[str, int]]] = []
                while True:
                    out = relay.datagrams_to_send(now, SEND_BATCH)
                    self.held.extend(x for x in out if x[1] != addr)
                    mine += [x for x in out if x[1] == addr]
                    if mine or len(out) < SEND_BATCH:
                        return mine

            return run

        def member_in(datagrams: list[tuple[bytes, tuple[str, int]]]) -> Callable[[], object]:
            def run() -> list[tuple[bytes, tuple[str, int]]]:
                for data, _ in datagrams:
                    client.receive_datagram(data, RELAY, now)
                return client.datagrams_to_send(now)

            return run

        def timers(endpoint: ClientSession | RelayCore) -> None:
            """What a driver does next: the endpoint's timer if it is due (ASAP)."""
            due = endpoint.next_timer()
            if due is not None and due <= now:
                endpoint.handle_timer(now)

        def hello_out() -> list[tuple[bytes, tuple[str, int]]]:
            client.connect(now)
            return member_out()

        self.held: list[tuple[bytes, tuple[str, int]]] = []
        hello = stage("member HELLO", hello_out)
        stage("member waiting", lambda: timers(client))
        challenge = stage("relay HELLO", relay_in(hello))  # type: ignore[arg-type]
        join = stage("member CHALLENGE", member_in(challenge))  # type: ignore[arg-type]
        if fanout:  # a member speaks just before: its message waits to fan out to everyone
            speaker = next(iter(self.members.items()))
            speaker[1].say("hello, everyone", now)
            for data, _ in speaker[1].datagrams_to_send(now):
                relay.receive_datagram(data, speaker[0], now)
        answer = stage("relay JOIN", relay_in(join))  # type: ignore[arg-type]
        assert isinstance(answer, list) and answer
        stage("member ACCEPT", member_in(answer[:1]))
        stage("member WELCOME", member_in(answer[1:]))
        stage("relay between", lambda: timers(relay))
        assert client.state is SessionState.JOINED, client.state
        for data, dest in self.held:  # what went to the others meanwhile
            self.members[dest].receive_datagram(data, RELAY, now)
        self.members[addr] = client
        self.pump({addr, *(dest for _, dest in self.held)})
        self.advance(0.6)  # the batch window (N / 2,000 s), its fan-out and the ACKs
        client.quit("bye", self.now)
        self.pump({addr})
        self.advance(0.6)
        del self.members[addr]
        return spent


def run_round(
    members: int,
    probes: int,
    seed: int,
    profile: cProfile.Profile | None,
    stage: str = "",
    fanout: bool = False,
) -> dict[str, float]:
    room = Room(members, seed)
    room.fill(members)
    room.profiled = stage
    rows = [room.probe(f"p{seed}x{i:04d}", profile, fanout) for i in range(probes)]
    size = len(room.relay.member_nicks())
    assert size == members, f"the room has {size} members, not {members}"
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
    parser.add_argument(
        "--fanout", action="store_true", help="each join comes while a message fans out"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    rounds = [
        run_round(args.members, args.probes, 1 + r, profile, args.stage, args.fanout)
        for r in range(args.rounds)
    ]
    result = {name: round(statistics.median(r[name] for r in rounds), 1) for name in STAGES}
    on_path = [n for n in STAGES if n not in OFF_PATH]
    result["relay"] = round(sum(result[n] for n in STAGES if n.startswith("relay")), 1)
    result["member"] = round(sum(result[n] for n in STAGES if n.startswith("member")), 1)
    result["on the join's path"] = round(sum(result[n] for n in on_path), 1)
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
