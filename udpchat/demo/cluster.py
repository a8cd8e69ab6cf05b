"""``udpchat demo --cluster``: the room outlives its relay.

The demo starts a ``redis-server`` of its own and three ``udpchat relay`` processes on one
Redis room (protocol.md 6.8), spreads the bots over them (bot ``i`` on relay ``i % 3``), each
given the three relays for fail-over (protocol.md 6.9: its own relay first, then the other two
in an order that alternates between bots, so that the killed relay's bots spread over both
survivors), and lets them chat through the usual impairment. Halfway through the sending the
relay with the most bots is killed with SIGKILL; its bots move to another relay and the room
goes on.

The verdict: every bot received every other bot's lines exactly once and in order across the
kill, every bot of the killed relay moved (its move time runs from the kill to its WELCOME
from the new relay), and no bot saw any member leave.

Invariants: every process the demo starts is stopped before it returns, whatever happened
(an error, a Ctrl-C): bots first, then relays, then Redis, then the temporary directory.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from udpchat.demo.bots import ReliableBot
from udpchat.demo.cluster_report import ClusterResult, Move, cluster_view, print_cluster_result
from udpchat.demo.config import DemoConfig, DemoError, bot_name
from udpchat.demo.display import Display
from udpchat.demo.processes import (
    RedisProcess,
    RelayProcess,
    missing_requirement,
    stop_relays,
)
from udpchat.demo.results import Recorder, verdicts
from udpchat.demo.run import drive, join_all, relay_config
from udpchat.endpoint import Address
from udpchat.events import (
    ClientEvent,
    MemberLeft,
    MembersLeft,
    MessageRefused,
    RelayMoved,
    Welcomed,
)

__all__ = ["RELAYS", "ROOM", "BotRecord", "ClusterBot", "run_cluster_demo"]

RELAYS = 3
ROOM = "demo"
MOVE_BACKLOG_S = 15.0  # seconds of a bot's lines a move may have to resend
KILLED = 0  # relay 1 carries bot1, bot4, ...: never fewer bots than another relay


def _hostport(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


class ClusterBot(ReliableBot):
    """A bot that also notes its moves between relays and every member it saw leave."""

    def __init__(
        self,
        index: int,
        relays: list[Address],
        config: DemoConfig,
        rec: Recorder,
    ) -> None:
        home = index % len(relays)
        others = [relays[(home + k) % len(relays)] for k in range(1, len(relays))]
        if (index // len(relays)) % 2:
            others.reverse()
        super().__init__(index, relays[home], config, rec, fallbacks=tuple(others))
        self._lock = threading.Lock()
        self.relay = _hostport(relays[home])
        self._trying: str | None = None
        self.moves: list[tuple[float, str, str]] = []  # (welcomed at, from, to)
        self.left_seen: list[str] = []
        self.refusals: list[str] = []
        self.attempts: list[tuple[float, str, str]] = []  # (when, left, tried)

    def _on_event(self, event: ClientEvent) -> None:
        super()._on_event(event)
        with self._lock:
            if isinstance(event, RelayMoved):
                self._trying = event.to
                self.attempts.append((time.monotonic(), event.relay, event.to))
            elif isinstance(event, Welcomed) and self._trying is not None:
                self.moves.append((time.monotonic(), self.relay, self._trying))
                self.relay, self._trying = self._trying, None
            elif isinstance(event, MemberLeft) and not event.history:
                self.left_seen.append(event.nick)
            elif isinstance(event, MembersLeft) and not event.history:
                self.left_seen.extend(event.nicks)
            elif isinstance(event, MessageRefused):
                self.refusals.append(event.reason)

    def where(self) -> tuple[str, str | None, str | None]:
        """The relay it is in, the one it is moving to (None when settled), and the one it
        last moved from (None if it never moved)."""
        with self._lock:
            return self.relay, self._trying, self.moves[-1][1] if self.moves else None

    def snapshot(self) -> BotRecord:
        with self._lock:
            return BotRecord(
                tuple(self.moves), len(self.attempts), tuple(self.left_seen),
                tuple(self.refusals),
            )


@dataclass(frozen=True)
class BotRecord:
    """What a bot saw of the cluster: its moves (welcomed at, from, to), how many relays it
    tried, the members it saw leave, the reasons its lines were refused."""

    moves: tuple[tuple[float, str, str], ...]
    attempts: int
    left_seen: tuple[str, ...]
    refusals: tuple[str, ...]


def _moves(
    records: list[BotRecord], homes: list[str], killed: str, killed_at: float | None
) -> tuple[tuple[Move, ...], tuple[Move, ...]]:
    """The killed relay's bots' first moves, and every other move (a bot whose relay went
    silent for another reason: heavy loss can do that)."""
    mine: list[Move] = []
    others: list[Move] = []
    for i, record in enumerate(records):
        where = homes[i]
        for j, (at, left, to) in enumerate(record.moves):
            after = None if killed_at is None else at - killed_at
            move = Move(bot_name(i), left, to, after, record.attempts if j == 0 else 0)
            (mine if where == killed and j == 0 else others).append(move)
        if where == killed and not record.moves:
            mine.append(Move(bot_name(i), where, None, None, record.attempts))
    return tuple(mine), tuple(others)


def _relay_args(config: DemoConfig, url: str, key: Path) -> list[str]:
    limits = relay_config(config)
    # A bot that moves resends every line its old relay never confirmed, at once: a few
    # seconds' worth, which the new relay's flood limit must let through.
    burst = max(limits.flood_burst, math.ceil(config.rate * MOVE_BACKLOG_S) + 10)
    # A moved bot catches up from the stream: the history must hold what the whole room
    # said while it moved, or the catch-up starts with a gap.
    history = max(limits.history, math.ceil(config.members * config.rate * MOVE_BACKLOG_S))
    return [
        "--store", url, "--room", ROOM, "--identity", str(key), "--history", str(history),
        "--flood-rate", f"{limits.flood_rate:g}", "--flood-burst", str(burst),
        "--handshake-rate", f"{limits.handshake_rate:g}",
        "--handshake-burst", str(limits.handshake_burst),
        "--max-per-host", str(limits.max_members_per_host),
        "--max-per-network", str(limits.max_members_per_network),
    ]


def _start_relays(
    config: DemoConfig, url: str, directory: Path, relays: list[RelayProcess]
) -> None:
    """The first relay alone (it creates the shared key file), then the other two. Each is
    in ``relays`` from the moment it is started: the caller stops them whatever happens."""
    args = _relay_args(config, url, directory / "relay.key")
    deadline = time.monotonic() + 30.0
    for i in range(RELAYS):
        relays.append(RelayProcess(f"relay {i + 1}", args, directory / f"relay{i + 1}.log"))
        if i == 0:
            relays[0].wait_listening(deadline)
    for relay in relays[1:]:
        relay.wait_listening(deadline)


def _killer(
    relay: RelayProcess, at: float, display: Display, stop: threading.Event
) -> threading.Thread:
    def kill() -> None:
        if stop.wait(max(0.0, at - time.monotonic())):
            return
        relay.crash()
        display.set_phase(
            f"{relay.name} ({_hostport(relay.address)}) killed with SIGKILL; "
            "its bots move to the other relays"
        )

    thread = threading.Thread(target=kill, name="demo-kill-relay", daemon=True)
    thread.start()
    return thread


def _run(config: DemoConfig, console: Console | None, directory: Path) -> ClusterResult:
    recorder = Recorder(config.members, config.messages)
    redis = RedisProcess(directory)
    relays: list[RelayProcess] = []
    bots: list[ClusterBot] = []
    stop = threading.Event()
    try:
        _start_relays(config, redis.url, directory, relays)
        addresses = [relay.address for relay in relays]
        victim = relays[KILLED]
        with Display(console, "three relays, one room on Redis") as display:
            display.set_phase(
                f"{config.members} bots joining {RELAYS} relays ("
                + ", ".join(_hostport(a) for a in addresses)
                + f") on {redis.url} room {ROOM!r}"
            )
            for i in range(config.members):
                bots.append(ClusterBot(i, addresses, config, recorder))
                bots[-1].client.start()
            join_s = join_all(bots, display)
            # Halfway through the sending: the bots' schedule starts about now.
            kill_at = time.monotonic() + (config.messages - 1) / config.rate / 2
            killer = _killer(victim, kill_at, display, stop)
            sending = time.monotonic()
            duration, errors = drive(
                config, recorder, bots, display, config.drain_s,
                view=lambda started: cluster_view(recorder, bots, relays, config, started),
            )
            stop.set()
            killer.join(timeout=5.0)
            numbers = [bot.link_numbers() for bot in bots]
            records = [bot.snapshot() for bot in bots]
    finally:
        stop.set()
        for bot in bots:
            bot.close()
        stop_relays(relays)
        redis.stop()
    run = verdicts("cluster", config, recorder, numbers, [None] * config.members, duration, errors)
    killed_at = victim.killed_at
    homes = [_hostport(addresses[i % RELAYS]) for i in range(config.members)]
    moves, other_moves = _moves(records, homes, _hostport(victim.address), killed_at)
    unreached = (
        0 if killed_at is None else recorder.unreached_without(
            {i for i in range(config.members) if i % RELAYS == KILLED},
            round(killed_at * 1e9),
        )
    )
    return ClusterResult(
        config=config,
        run=run,
        store=redis.url,
        relays=tuple(_hostport(a) for a in addresses),
        killed=_hostport(victim.address),
        killed_after_s=None if killed_at is None else killed_at - sending,
        moves=moves,
        other_moves=other_moves,
        left_seen=tuple(nick for r in records for nick in r.left_seen),
        refusals=tuple(
            f"{bot_name(i)}: {reason}" for i, r in enumerate(records) for reason in r.refusals
        ),
        lost_without_failover=unreached,
        join_s=join_s,
    )


def run_cluster_demo(config: DemoConfig, console: Console | None = None) -> ClusterResult:
    """Run the cluster demo; with a console, show it live and print the verdict.

    ``DemoError`` when redis-server or the redis package is missing, or a part did not
    start."""
    missing = missing_requirement()
    if missing is not None:
        raise DemoError(missing)
    started = time.monotonic()
    if console is not None:
        net = config.impairment(0)
        console.print(
            f"udpchat demo --cluster: {config.members} bots on {RELAYS} relays sharing one "
            f"room on Redis send {config.messages} messages each at {config.rate:g}/s; "
            f"halfway through, one relay is killed with SIGKILL.\n"
            f"Each bot's link, each way: {net.loss:.0%} lost, "
            f"{net.delay * 1000:g} ms +/- {net.jitter * 1000:g} ms delay, "
            f"{net.duplicate:.0%} duplicated, {net.reorder:.0%} held back "
            f"{net.reorder_delay * 1000:g} ms (seed {config.seed}).",
            highlight=False,
        )
    with tempfile.TemporaryDirectory(prefix="udpchat-demo-") as directory:
        result = _run(config, console, Path(directory))
    result = result.finished(time.monotonic() - started)
    if console is not None:
        with contextlib.suppress(BrokenPipeError):
            print_cluster_result(result, console)
    return result
