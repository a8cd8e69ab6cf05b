"""``udpchat demo``: a relay and bot members on loopback, chatting across a simulated bad network.

The same traffic runs twice under the same impairment. First over udpchat itself (a
``RelayServer`` and one ``ChatClient`` per bot), then as plain UDP datagrams through the
forwarder of the plain-udp benchmark baseline, which repairs nothing. In both runs each bot's
socket crosses the impairment in both directions and the relay's does not, so every datagram
between a bot and the relay crosses exactly one simulated network. Each bot's impairment has
the same seed in both runs (the fates still differ datagram by datagram: the reliable run
sends handshakes, ACKs and retransmissions that the plain run does not).

Each bot sends ``messages`` chat lines at a steady ``rate``; each line names its sender and
number. Delivery latency runs from just before the sender's send call to the receiver's event,
both read from ``time.monotonic_ns`` in this one process. The verdict uses the benchmark's
``analyze``: every bot must receive every other bot's messages exactly once, in order.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Protocol

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from udpchat.benchmark.accounting import SocketMeter
from udpchat.benchmark.baselines import PLAIN_UDP, UDP_BYE, UDP_DATA, UDP_HELLO, UDP_WELCOME
from udpchat.benchmark.systems import RelayArgs
from udpchat.benchmark.traffic import (
    DeliveryLog,
    DeliveryStats,
    analyze,
    schedule_ns,
    sleep_until_ns,
)
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.endpoint import Address
from udpchat.errors import UsageError
from udpchat.events import (
    ClientEvent,
    ConnectionLost,
    HistoryGap,
    MessageReceived,
    MessageRefused,
)
from udpchat.impair import ImpairmentConfig
from udpchat.relay_core import RelayConfig
from udpchat.relay_server import RelayOptions, RelayServer
from udpchat.transport import ImpairedTransport, UdpTransport

LOOPBACK = "127.0.0.1"

DEFAULT_NETWORK = ImpairmentConfig(
    loss=0.25,
    delay=0.002,
    jitter=0.005,
    duplicate=0.02,
    reorder=0.05,
    reorder_delay=0.25,
)
"""The demo's bad network, crossed once in each direction by every bot: a quarter of the
datagrams lost, 2 ms +/- 5 ms of delay, 2% duplicated and 5% held back a quarter of a second
(long enough for the next messages of the same sender to overtake them)."""

MAX_MEMBERS = 32
MAX_MESSAGES = 10_000
MAX_RATE = 200.0
MAX_SEND_DURATION_S = 300.0
JOIN_TIMEOUT_S = 30.0  # the handshake backs off to 2 s between tries: slow at high loss
SETTLE_S = 0.3  # keep listening after the last delivery: late duplicates still count
POLL_S = 0.1  # how often the waiting thread looks at progress and refreshes the display
PLAIN_HELLO_RETRY_S = 0.2

_TEXT_RE = re.compile(r"^bot(\d+) message (\d+) of (\d+)$")


class DemoError(UsageError):
    """The demo could not run (a bot could not join, a relay did not start)."""


def bot_name(index: int) -> str:
    return f"bot{index + 1}"


def message_text(sender: int, msg_id: int, total: int) -> str:
    """The chat line bot ``sender`` sends as its message ``msg_id`` (0-based) of ``total``."""
    return f"{bot_name(sender)} message {msg_id + 1} of {total}"


def parse_text(text: str) -> tuple[int, int] | None:
    """``(sender, msg_id)`` from a line made by :func:`message_text`, or None."""
    match = _TEXT_RE.match(text)
    if match is None:
        return None
    sender, number = int(match.group(1)) - 1, int(match.group(2)) - 1
    if sender < 0 or number < 0:
        return None
    return sender, number


# --- configuration and results --------------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """What to run. ``loss`` and ``seed`` override those of ``network``.

    ``drain_s`` bounds how long the reliable run waits for missing messages after the last
    send; the plain run waits only as long as a datagram can be held by the network.
    """

    members: int = 4
    messages: int = 50
    rate: float = 10.0
    loss: float = 0.25
    seed: int = 1
    network: ImpairmentConfig = DEFAULT_NETWORK
    drain_s: float = 15.0
    compare_plain: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.members, bool) or not 2 <= self.members <= MAX_MEMBERS:
            raise ValueError(f"members: expected 2 to {MAX_MEMBERS}, got {self.members}")
        if isinstance(self.messages, bool) or not 1 <= self.messages <= MAX_MESSAGES:
            raise ValueError(f"messages: expected 1 to {MAX_MESSAGES}, got {self.messages}")
        if not (math.isfinite(self.rate) and 0 < self.rate <= MAX_RATE):
            raise ValueError(f"rate: expected more than 0 and at most {MAX_RATE:g} messages/s")
        if (self.messages - 1) / self.rate > MAX_SEND_DURATION_S:
            raise ValueError(
                f"rate: {self.messages} messages at {self.rate:g}/s take longer than "
                f"{MAX_SEND_DURATION_S:g} s; raise the rate or send fewer"
            )
        if not (0.0 <= self.loss < 1.0):
            raise ValueError(f"loss: expected at least 0% and below 100%, got {self.loss * 100:g}%")
        if not (math.isfinite(self.drain_s) and 0 <= self.drain_s <= 600):
            raise ValueError(f"drain_s: expected 0 to 600 seconds, got {self.drain_s}")
        # Check the seed and the resulting impairment the way the network itself does.
        self.impairment(0)

    def impairment(self, member: int) -> ImpairmentConfig:
        """The network that bot ``member`` sees, the same in both runs."""
        base = replace(self.network, loss=self.loss, seed=self.seed)
        return base.derive(f"member{member}")

    @property
    def expected_per_member(self) -> int:
        return (self.members - 1) * self.messages

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["network"] = asdict(replace(self.network, loss=self.loss, seed=self.seed))
        return data


@dataclass(frozen=True)
class MemberVerdict:
    """One bot's view of a run. ``retransmissions`` are its link's resends to the relay and
    ``relay_retransmissions`` the relay's resends to it (both None over plain UDP)."""

    name: str
    sent: int
    expected: int
    delivered: int
    duplicates: int
    out_of_order: int
    lost: int
    retransmissions: int | None
    relay_retransmissions: int | None
    srtt_ms: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    reconnects: int = 0
    refused: int = 0
    history_gaps: int = 0


@dataclass(frozen=True)
class RunResult:
    """One pass of the traffic: ``mode`` is ``"reliable"`` or ``"plain-udp"``."""

    mode: str
    members: tuple[MemberVerdict, ...]
    stats: DeliveryStats
    duration_s: float
    send_errors: tuple[str, ...] = ()
    join_s: float = 0.0

    @property
    def expected(self) -> int:
        return self.stats.expected

    @property
    def delivered(self) -> int:
        return self.stats.delivered

    @property
    def duplicates(self) -> int:
        return self.stats.duplicates

    @property
    def out_of_order(self) -> int:
        return self.stats.out_of_order

    @property
    def retransmissions(self) -> int | None:
        counts = [
            n
            for m in self.members
            for n in (m.retransmissions, m.relay_retransmissions)
            if n is not None
        ]
        return sum(counts) if counts else None

    @property
    def clean(self) -> bool:
        """Everything delivered exactly once, in order, and nothing else."""
        s = self.stats
        return (
            s.delivered == s.expected
            and s.duplicates == 0
            and s.out_of_order == 0
            and s.unexpected == 0
            and s.malformed == 0
        )

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "mode": self.mode,
            "expected": s.expected,
            "delivered": s.delivered,
            "duplicates": s.duplicates,
            "out_of_order": s.out_of_order,
            "lost": s.lost,
            "unexpected": s.unexpected,
            "malformed": s.malformed,
            "delivery_ratio": s.delivery_ratio,
            "retransmissions": self.retransmissions,
            "latency_ms": None
            if s.latency_ms is None
            else {k: round(v, 3) for k, v in asdict(s.latency_ms).items()},
            "join_s": round(self.join_s, 3),
            "duration_s": round(self.duration_s, 3),
            "send_errors": list(self.send_errors),
            "clean": self.clean,
            "members": [asdict(m) for m in self.members],
        }


@dataclass(frozen=True)
class DemoResult:
    config: DemoConfig
    reliable: RunResult
    plain: RunResult | None
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """The reliable run lost, duplicated and reordered nothing."""
        return self.reliable.clean

    def summary(self) -> str:
        """One line that puts the two runs side by side."""
        parts = [_summary("reliable", self.reliable)]
        if self.plain is not None:
            parts.append(_summary("plain UDP", self.plain))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "config": self.config.to_dict(),
            "reliable": self.reliable.to_dict(),
            "plain": None if self.plain is None else self.plain.to_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
        }


def percent(part: int, whole: int) -> str:
    """A share that never rounds up to 100% (or down to 0%) unless it is exactly that."""
    if whole == 0 or part == whole:
        return "100%"
    if part == 0:
        return "0%"
    share = part / whole * 100
    return f"{min(max(math.floor(share * 10) / 10, 0.1), 99.9):.1f}%"


def _summary(label: str, run: RunResult) -> str:
    return (
        f"{label}: {percent(run.delivered, run.expected)} delivered, "
        f"{run.duplicates} dup, {run.out_of_order} out of order"
    )


# --- what the bots received -----------------------------------------------------------------


@dataclass
class _Progress:
    sent: int = 0
    unique: set[tuple[int, int]] = field(default_factory=set)
    refused: int = 0
    connection_lost: int = 0
    history_gaps: int = 0


class _Recorder:
    """Send times and deliveries of one run, written from many threads."""

    def __init__(self, members: int, messages: int) -> None:
        self.members = members
        self.messages = messages
        self._lock = threading.Lock()
        self._send_ns: dict[tuple[int, int], int] = {}
        self._logs = [DeliveryLog(member=i) for i in range(members)]
        self._progress = [_Progress() for _ in range(members)]

    def will_send(self, sender: int, msg_id: int) -> None:
        """Called just before the send call: latency counts from here."""
        now = time.monotonic_ns()
        with self._lock:
            self._send_ns[(sender, msg_id)] = now

    def did_send(self, sender: int) -> None:
        with self._lock:
            self._progress[sender].sent += 1

    def delivered(self, receiver: int, text: str) -> None:
        recv_ns = time.monotonic_ns()
        parsed = parse_text(text)
        with self._lock:
            log = self._logs[receiver]
            if parsed is None:
                log.malformed += 1
                return
            log.senders.append(parsed[0])
            log.msg_ids.append(parsed[1])
            log.send_ns.append(self._send_ns.get(parsed, recv_ns))
            log.recv_ns.append(recv_ns)
            if parsed[0] != receiver and 0 <= parsed[1] < self.messages:
                self._progress[receiver].unique.add(parsed)

    def count(self, receiver: int, what: str) -> None:
        with self._lock:
            progress = self._progress[receiver]
            setattr(progress, what, getattr(progress, what) + 1)

    def sent(self, member: int) -> int:
        with self._lock:
            return self._progress[member].sent

    def received(self, member: int) -> int:
        with self._lock:
            return len(self._progress[member].unique)

    def complete(self) -> bool:
        expected = (self.members - 1) * self.messages
        with self._lock:
            return all(len(p.unique) == expected for p in self._progress)

    def snapshot(self) -> tuple[list[DeliveryLog], list[_Progress]]:
        with self._lock:
            logs = [DeliveryLog.from_dict(log.to_dict()) for log in self._logs]
            progress = [
                _Progress(p.sent, set(p.unique), p.refused, p.connection_lost, p.history_gaps)
                for p in self._progress
            ]
        return logs, progress


# --- the bots -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LinkNumbers:
    retransmissions: int | None
    srtt_ms: float | None
    reconnects: int


class _Bot(Protocol):
    def send(self, text: str) -> None: ...

    def link_numbers(self) -> _LinkNumbers: ...

    def close(self) -> None: ...


class _ReliableBot:
    """A ``ChatClient`` whose events go to the recorder."""

    def __init__(self, index: int, relay: Address, config: DemoConfig, rec: _Recorder) -> None:
        self.index = index
        self._recorder = rec
        options = ClientOptions(
            nick=bot_name(index),
            server=relay,
            impairment=config.impairment(index),
            join_timeout=JOIN_TIMEOUT_S,
            pace=False,  # the demo relay's flood limits are raised to the bots' rate
        )
        self.client = ChatClient(options, on_event=self._on_event)

    def _on_event(self, event: ClientEvent) -> None:
        if isinstance(event, MessageReceived):
            if not event.own:
                self._recorder.delivered(self.index, event.text)
        elif isinstance(event, MessageRefused):
            self._recorder.count(self.index, "refused")
        elif isinstance(event, ConnectionLost):
            self._recorder.count(self.index, "connection_lost")
        elif isinstance(event, HistoryGap):
            self._recorder.count(self.index, "history_gaps")

    def send(self, text: str) -> None:
        self.client.say(text)

    def link_numbers(self) -> _LinkNumbers:
        stats = self.client.stats()
        return _LinkNumbers(
            retransmissions=int(stats["retransmissions"]),
            srtt_ms=float(stats["srtt_ms"]),
            reconnects=int(stats["reconnects"]),
        )

    def close(self) -> None:
        self.client.close()


class _PlainBot:
    """A member of the plain UDP forwarder, its socket behind the same impairment."""

    def __init__(self, index: int, relay: Address, config: DemoConfig, rec: _Recorder) -> None:
        self.index = index
        self._relay = relay
        self._recorder = rec
        self._transport = ImpairedTransport(
            UdpTransport.bind(LOOPBACK, 0), config.impairment(index)
        )
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def join(self, timeout: float) -> bool:
        """Say hello until welcomed: registration must get through even though chat need not,
        or the run would measure missing members rather than lost messages."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._transport.sendto(UDP_HELLO, self._relay)
            retry = min(deadline, time.monotonic() + PLAIN_HELLO_RETRY_S)
            while (left := retry - time.monotonic()) > 0:
                got = self._transport.recvfrom(left)
                if got is not None and got == (UDP_WELCOME, self._relay):
                    self._thread = threading.Thread(
                        target=self._receive, name=f"demo-{bot_name(self.index)}", daemon=True
                    )
                    self._thread.start()
                    return True
        return False

    def _receive(self) -> None:
        while not self._closed.is_set():
            got = self._transport.recvfrom(POLL_S)
            if got is not None and got[1] == self._relay and got[0][:1] == UDP_DATA:
                text = got[0][1:].decode("utf-8", errors="replace")
                self._recorder.delivered(self.index, text)

    def send(self, text: str) -> None:
        self._transport.sendto(UDP_DATA + text.encode(), self._relay)

    def link_numbers(self) -> _LinkNumbers:
        return _LinkNumbers(retransmissions=None, srtt_ms=None, reconnects=0)

    def close(self) -> None:
        self._transport.sendto(UDP_BYE, self._relay)
        self._closed.set()
        self._transport.close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


# --- the live display -----------------------------------------------------------------------


class _Display:
    """Live progress on a terminal; a line per phase otherwise; nothing without a console."""

    def __init__(self, console: Console | None, title: str) -> None:
        self.console = console
        self.title = title
        self.phase = "starting"
        self._live: Live | None = None
        self._render: Callable[[], RenderableType] | None = None

    def __enter__(self) -> _Display:
        if self.console is not None and self.console.is_terminal:
            self._live = Live(
                console=self.console,
                get_renderable=self._renderable,
                refresh_per_second=8,
                transient=True,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def watch(self, render: Callable[[], RenderableType]) -> None:
        self._render = render

    def set_phase(self, phase: str) -> None:
        """A new phase: shown live, or printed as a line."""
        self.phase = phase
        if self._live is None and self.console is not None:
            self.console.print(f"{self.title}: {phase}", highlight=False, markup=False)

    def status(self, phase: str) -> None:
        """Progress within a phase: shown live only."""
        self.phase = phase
        self.refresh()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _renderable(self) -> RenderableType:
        header = Text.assemble((self.title, "bold"), ": ", self.phase)
        if self._render is None:
            return header
        return Group(header, self._render())


def _progress_view(
    recorder: _Recorder, bots: Sequence[_Bot], config: DemoConfig, started: float
) -> RenderableType:
    expected = config.expected_per_member
    table = Table(box=None, pad_edge=False)
    table.add_column("member")
    table.add_column("sent", justify="right")
    table.add_column("delivered", justify="right")
    table.add_column("", min_width=20)
    table.add_column("retx to relay", justify="right")
    table.add_column("srtt ms", justify="right")
    total = 0
    for i, bot in enumerate(bots):
        got = recorder.received(i)
        total += got
        numbers = bot.link_numbers()
        table.add_row(
            bot_name(i),
            f"{recorder.sent(i)}/{config.messages}",
            f"{got}/{expected}",
            ProgressBar(total=expected, completed=got, width=20),
            _or_dash(numbers.retransmissions),
            _or_dash(numbers.srtt_ms, "{:.1f}"),
        )
    overall = expected * len(bots)
    line = Text(
        f"{total}/{overall} delivered ({percent(total, overall)}), "
        f"{time.monotonic() - started:.1f} s"
    )
    return Group(table, line)


def _or_dash(value: float | None, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


# --- one run --------------------------------------------------------------------------------


def _send_all(
    bot: _Bot,
    index: int,
    config: DemoConfig,
    recorder: _Recorder,
    start_ns: int,
    stop: threading.Event,
    errors: list[str],
) -> None:
    """Send this bot's messages on schedule; bots are staggered evenly within a period."""
    offset = round(index * 1e9 / (config.rate * config.members))
    for msg_id, due in schedule_ns(start_ns + offset, config.messages, config.rate):
        sleep_until_ns(due)
        if stop.is_set():
            return
        recorder.will_send(index, msg_id)
        try:
            bot.send(message_text(index, msg_id, config.messages))
        except Exception as error:  # the verdict counts what was never sent as lost
            errors.append(f"{bot_name(index)}: {error}")
            return
        recorder.did_send(index)


def _drive(
    config: DemoConfig,
    recorder: _Recorder,
    bots: Sequence[_Bot],
    display: _Display,
    drain_s: float,
) -> tuple[float, tuple[str, ...]]:
    """Send everything, then wait for stragglers; return the run's duration and send errors."""
    started = time.monotonic()
    display.watch(lambda: _progress_view(recorder, bots, config, started))
    stop = threading.Event()
    errors: list[str] = []
    start_ns = time.monotonic_ns() + 50_000_000
    senders = [
        threading.Thread(
            target=_send_all,
            args=(bot, i, config, recorder, start_ns, stop, errors),
            name=f"demo-send-{bot_name(i)}",
            daemon=True,
        )
        for i, bot in enumerate(bots)
    ]
    display.set_phase(
        f"{config.members} bots sending {config.messages} messages each at {config.rate:g}/s"
    )
    for thread in senders:
        thread.start()
    send_deadline = started + (config.messages - 1) / config.rate + 5.0
    try:
        while any(t.is_alive() for t in senders) and time.monotonic() < send_deadline:
            display.refresh()
            time.sleep(POLL_S)
    finally:
        stop.set()
        for thread in senders:
            thread.join(timeout=1.0)
    display.set_phase("all sent; waiting for the last deliveries")
    drain_deadline = time.monotonic() + drain_s
    while not recorder.complete() and time.monotonic() < drain_deadline:
        display.refresh()
        time.sleep(POLL_S / 2)
    done = time.monotonic()
    if recorder.complete():
        time.sleep(SETTLE_S)  # late duplicates count too
    display.refresh()
    return done - started, tuple(errors)


def _verdicts(
    mode: str,
    config: DemoConfig,
    recorder: _Recorder,
    numbers: Sequence[_LinkNumbers],
    relay_retx: Sequence[int | None],
    duration: float,
    send_errors: tuple[str, ...],
) -> RunResult:
    logs, progress = recorder.snapshot()
    intended = dict.fromkeys(range(config.members), config.messages)
    members = []
    for i, (log, p) in enumerate(zip(logs, progress, strict=True)):
        s = analyze([log], intended)
        latency = s.latency_ms
        link = numbers[i]
        members.append(
            MemberVerdict(
                name=bot_name(i),
                sent=p.sent,
                expected=s.expected,
                delivered=s.delivered,
                duplicates=s.duplicates,
                out_of_order=s.out_of_order,
                lost=s.lost,
                retransmissions=link.retransmissions,
                relay_retransmissions=relay_retx[i],
                srtt_ms=link.srtt_ms,
                latency_p50_ms=None if latency is None else round(latency.p50, 2),
                latency_p99_ms=None if latency is None else round(latency.p99, 2),
                reconnects=max(link.reconnects, p.connection_lost),
                refused=p.refused,
                history_gaps=p.history_gaps,
            )
        )
    return RunResult(mode, tuple(members), analyze(logs, intended), duration, send_errors)


def _relay_config(config: DemoConfig) -> RelayConfig:
    """The relay's defaults, but with flood and handshake limits that let the bots' steady
    traffic (and its bursts after a loss is repaired) through: the demo is about loss, not
    about flood control. Every bot joins from 127.0.0.1, one source for the handshake limit."""
    return RelayConfig(
        flood_rate=max(5.0, 2 * config.rate),
        flood_burst=max(10, math.ceil(2 * config.rate) + 10),
        handshake_rate=max(5.0, 4.0 * config.members),
        handshake_burst=max(20, 8 * config.members),
        max_members_per_host=max(64, config.members + 1),
        max_members_per_network=max(256, config.members + 1),
    )


def _run_reliable(config: DemoConfig, console: Console | None) -> RunResult:
    recorder = _Recorder(config.members, config.messages)
    relay = RelayServer(RelayOptions(host=LOOPBACK, port=0, config=_relay_config(config)))
    relay.start()
    bots: list[_ReliableBot] = []
    relay_retx: list[int | None] = [None] * config.members
    try:
        with _Display(console, "reliable (udpchat)") as display:
            display.set_phase(f"{config.members} bots joining the relay")
            for i in range(config.members):
                bots.append(_ReliableBot(i, relay.address, config, recorder))
                bots[-1].client.start()
            join_s = _join_all(bots, display)
            duration, errors = _drive(config, recorder, bots, display, config.drain_s)
            numbers = [bot.link_numbers() for bot in bots]
    finally:
        relay.stop(goodbye=False)
        # The relay is stopped: its sessions can be read (they were not said goodbye to).
        index = {bot_name(i): i for i in range(config.members)}
        for member in relay.core.members.values():
            if member.nick in index:
                relay_retx[index[member.nick]] = member.link.stats.retransmissions
        for bot in bots:
            bot.close()
    result = _verdicts("reliable", config, recorder, numbers, relay_retx, duration, errors)
    return replace(result, join_s=join_s)


def _join_all(bots: Sequence[_ReliableBot], display: _Display) -> float:
    """Wait until every bot is in the room; return how long that took."""
    started = time.monotonic()
    deadline = started + JOIN_TIMEOUT_S
    waiting = list(bots)
    while waiting:
        if waiting[0].client.wait_joined(POLL_S):
            waiting.pop(0)
            continue
        display.status(
            f"{len(bots) - len(waiting)} of {len(bots)} bots in the room "
            f"after {time.monotonic() - started:.1f} s (handshakes lost and retried)"
        )
        if time.monotonic() >= deadline:
            raise DemoError(
                f"{bot_name(waiting[0].index)} could not join the relay within "
                f"{JOIN_TIMEOUT_S:g} s (every handshake attempt was lost)"
            )
    return time.monotonic() - started


def _plain_drain(config: DemoConfig) -> float:
    """Longest a datagram can spend in the two impairments between bots, plus a margin."""
    net = config.impairment(0)
    one_way = net.delay + net.jitter + (net.reorder_delay if net.reorder > 0 else 0.0)
    return 2 * one_way + 0.5


def _run_plain(config: DemoConfig, console: Console | None) -> RunResult:
    recorder = _Recorder(config.members, config.messages)
    stop = threading.Event()
    ready = threading.Event()
    where: list[Address] = []

    def on_ready(address: Address) -> None:
        where.append(address)
        ready.set()

    relay = threading.Thread(
        target=PLAIN_UDP.run_relay,
        args=(RelayArgs(host=LOOPBACK, seed=config.seed), SocketMeter(), on_ready, stop),
        name="demo-plain-relay",
        daemon=True,
    )
    relay.start()
    bots: list[_PlainBot] = []
    try:
        if not ready.wait(5.0):
            raise DemoError("the plain UDP forwarder did not start")
        with _Display(console, "plain UDP (no reliability)") as display:
            display.set_phase(f"{config.members} bots registering with the forwarder")
            joining = time.monotonic()
            deadline = joining + JOIN_TIMEOUT_S
            for i in range(config.members):
                bots.append(_PlainBot(i, where[0], config, recorder))
                if not bots[-1].join(max(0.0, deadline - time.monotonic())):
                    raise DemoError(
                        f"{bot_name(i)} could not register with the plain UDP forwarder "
                        f"within {JOIN_TIMEOUT_S:g} s"
                    )
            join_s = time.monotonic() - joining
            duration, errors = _drive(config, recorder, bots, display, _plain_drain(config))
    finally:
        for bot in bots:
            bot.close()
        stop.set()
        relay.join(timeout=2.0)
    numbers = [bot.link_numbers() for bot in bots]
    none: list[int | None] = [None] * config.members
    result = _verdicts("plain-udp", config, recorder, numbers, none, duration, errors)
    return replace(result, join_s=join_s)


# --- the verdict ----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


VERDICT_LEGEND = (
    "exp: messages it should get; got: received once; dup: extra copies; ooo: out of order; "
    "retx: resent by the bot / by the relay; srtt: smoothed round trip; p50, p99: latency "
    "of what arrived; times in ms"
)


def verdict_table(run: RunResult, title: str) -> Table:
    """Per member: what it should have got and what it got. Short headers and a legend, so
    that the table fits 80 columns without cutting a header."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("member", no_wrap=True)
    for name in ("exp", "got", "dup", "ooo", "retx", "srtt", "p50", "p99"):
        table.add_column(name, justify="right", no_wrap=True)
    rejoins = any(m.reconnects for m in run.members)
    if rejoins:
        table.add_column("rejoins", justify="right", no_wrap=True)
    for m in run.members:
        retx = (
            "-"
            if m.retransmissions is None
            else f"{m.retransmissions}/{_or_dash(m.relay_retransmissions)}"
        )
        cells: list[str | Text] = [
            m.name,
            str(m.expected),
            _judged(m.delivered, m.delivered != m.expected),
            _judged(m.duplicates, m.duplicates > 0),
            _judged(m.out_of_order, m.out_of_order > 0),
            retx,
            _ms(m.srtt_ms),
            _ms(m.latency_p50_ms),
            _ms(m.latency_p99_ms),
        ]
        if rejoins:
            cells.append(str(m.reconnects))
        table.add_row(*cells)
    return table


def _span(run: RunResult) -> str:
    first, last = run.stats.first_send_ns, run.stats.last_recv_ns
    return "-" if first is None or last is None else f"{(last - first) / 1e9:.2f}"


def _latency(run: RunResult, quantile: str) -> str:
    summary = run.stats.latency_ms
    return "-" if summary is None else _ms(float(getattr(summary, quantile)))


def _judged(value: int, bad: bool) -> Text:
    return Text(str(value), "red" if bad else "green")


def comparison_table(result: DemoResult) -> Table:
    """The two runs side by side, totals over every member.

    Latency is measured on what arrived: plain UDP's figures leave out everything it lost,
    and the reliable run's include every message that had to be resent, so the caption says
    which share each figure covers rather than let the lower number look like the winner.
    """
    runs = [("reliable (udpchat)", result.reliable)]
    if result.plain is not None:
        runs.append(("plain UDP", result.plain))
    caption = None
    if result.plain is not None:
        plain = result.plain
        caption = (
            f"Latency covers what arrived: all of the reliable run's messages, resent ones "
            f"included, but only the {percent(plain.delivered, plain.expected)} that plain UDP "
            "delivered; what it lost would never arrive."
        )
    table = Table(
        title="Same traffic, same network",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    table.add_column("")
    for label, _ in runs:
        table.add_column(label, justify="right")

    def row(label: str, cell: Callable[[RunResult], str | Text]) -> None:
        table.add_row(label, *(cell(run) for _, run in runs))

    row(
        "delivered",
        lambda r: Text(
            f"{r.delivered}/{r.expected} ({percent(r.delivered, r.expected)})",
            "green" if r.delivered == r.expected else "red",
        ),
    )
    row("lost", lambda r: _judged(r.stats.lost, r.stats.lost > 0))
    row("duplicates", lambda r: _judged(r.duplicates, r.duplicates > 0))
    row("out of order", lambda r: _judged(r.out_of_order, r.out_of_order > 0))
    row("retransmissions", lambda r: _or_dash(r.retransmissions))
    row(
        "reconnects",
        lambda r: "-" if r.mode != "reliable" else str(sum(m.reconnects for m in r.members)),
    )
    for q in ("p50", "p99", "max"):
        row(f"latency {q} ms, of what arrived", partial(_latency, quantile=q))
    row("all bots joined after s", lambda r: f"{r.join_s:.2f}" if r.mode == "reliable" else "-")
    row("first send to last delivery s", _span)
    return table


def print_result(result: DemoResult, console: Console) -> None:
    """The final tables and the one-line verdict."""
    console.print(verdict_table(result.reliable, "Reliable run (udpchat), per member"))
    if result.plain is not None:
        console.print(verdict_table(result.plain, "Plain UDP run (no reliability), per member"))
    console.print(Text(VERDICT_LEGEND, "dim"))
    console.print(comparison_table(result))
    for run in (result.reliable, result.plain):
        if run is not None:
            for error in run.send_errors:
                console.print(f"{run.mode}: not sent: {error}", highlight=False, markup=False)
    style = "bold green" if result.ok else "bold red"
    for label, run in (("reliable", result.reliable), ("plain UDP", result.plain)):
        if run is not None:  # one line per run: a line that wraps breaks mid-phrase
            console.print(Text(_summary(label, run), style if run is result.reliable else ""))
    if not result.ok:
        console.print(Text("the reliable run lost, duplicated or reordered messages", "bold red"))


# --- the entry point ------------------------------------------------------------------------


def run_demo(config: DemoConfig, console: Console | None = None) -> DemoResult:
    """Run the reliable pass, then (``compare_plain``) the plain UDP pass, and judge both.

    With a console, show progress (live on a terminal, a line per phase otherwise) and the
    final tables; without one, print nothing.
    """
    started = time.monotonic()
    if console is not None:
        net = config.impairment(0)
        console.print(
            f"udpchat demo: {config.members} bots send {config.messages} messages each at "
            f"{config.rate:g}/s through a relay on 127.0.0.1.\n"
            f"Each bot's link, each way: {net.loss:.0%} lost, "
            f"{net.delay * 1000:g} ms +/- {net.jitter * 1000:g} ms delay, "
            f"{net.duplicate:.0%} duplicated, {net.reorder:.0%} held back "
            f"{net.reorder_delay * 1000:g} ms (seed {config.seed}).",
            highlight=False,
        )
    reliable = _run_reliable(config, console)
    plain = _run_plain(config, console) if config.compare_plain else None
    result = DemoResult(config, reliable, plain, time.monotonic() - started)
    if console is not None:
        with contextlib.suppress(BrokenPipeError):
            print_result(result, console)
    return result
