"""One demo: the reliable run through a relay, the plain run through the forwarder, the same
traffic on the same network, then the verdict.

Each bot sends its lines on a fixed schedule, staggered within a period; after the last send
the run waits for stragglers (the reliable run up to ``drain_s``, the plain run only as long
as the network can hold a datagram).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from rich.console import Console, RenderableType

from udpchat.demo.bots import Bot, PlainBot, ReliableBot, run_forwarder
from udpchat.demo.config import (
    JOIN_TIMEOUT_S,
    LOOPBACK,
    POLL_S,
    SETTLE_S,
    DemoConfig,
    DemoError,
    bot_name,
    message_text,
)
from udpchat.demo.delivery import schedule_ns, sleep_until_ns
from udpchat.demo.display import Display, print_result, progress_view
from udpchat.demo.results import DemoResult, Recorder, RunResult, verdicts
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import RelayOptions, RelayServer

__all__ = ["drive", "join_all", "relay_config", "run_demo"]


def _send_all(
    bot: Bot,
    index: int,
    config: DemoConfig,
    recorder: Recorder,
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


def drive(
    config: DemoConfig,
    recorder: Recorder,
    bots: Sequence[Bot],
    display: Display,
    drain_s: float,
    view: Callable[[float], RenderableType] | None = None,
) -> tuple[float, tuple[str, ...]]:
    """Send everything, then wait for stragglers; return the run's duration and send errors.

    ``view``, given the run's start (``time.monotonic``), is what the live display shows;
    by default each bot's progress."""
    started = time.monotonic()
    if view is None:
        display.watch(lambda: progress_view(recorder, bots, config, started))
    else:
        display.watch(lambda: view(started))
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
        # One second for all of them (they are daemons): a Ctrl-C ends the run promptly.
        joined_by = time.monotonic() + 1.0
        for thread in senders:
            thread.join(timeout=max(0.0, joined_by - time.monotonic()))
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


def relay_config(config: DemoConfig) -> RelayConfig:
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
    recorder = Recorder(config.members, config.messages)
    relay = RelayServer(RelayOptions(host=LOOPBACK, port=0, config=relay_config(config)))
    relay.start()
    bots: list[ReliableBot] = []
    relay_retx: list[int | None] = [None] * config.members
    try:
        with Display(console, "reliable (udpchat)") as display:
            display.set_phase(f"{config.members} bots joining the relay")
            for i in range(config.members):
                bots.append(ReliableBot(i, relay.address, config, recorder))
                bots[-1].client.start()
            join_s = join_all(bots, display)
            duration, errors = drive(config, recorder, bots, display, config.drain_s)
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
    result = verdicts("reliable", config, recorder, numbers, relay_retx, duration, errors)
    return replace(result, join_s=join_s)


def join_all(bots: Sequence[ReliableBot], display: Display) -> float:
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
    recorder = Recorder(config.members, config.messages)
    stop = threading.Event()
    ready = threading.Event()
    where: list[Address] = []

    def on_ready(address: Address) -> None:
        where.append(address)
        ready.set()

    relay = threading.Thread(
        target=run_forwarder,
        args=(LOOPBACK, on_ready, stop),
        name="demo-plain-relay",
        daemon=True,
    )
    relay.start()
    bots: list[PlainBot] = []
    try:
        if not ready.wait(5.0):
            raise DemoError("the plain UDP forwarder did not start")
        with Display(console, "plain UDP (no reliability)") as display:
            display.set_phase(f"{config.members} bots registering with the forwarder")
            joining = time.monotonic()
            deadline = joining + JOIN_TIMEOUT_S
            for i in range(config.members):
                bots.append(PlainBot(i, where[0], config, recorder))
                if not bots[-1].join(max(0.0, deadline - time.monotonic())):
                    raise DemoError(
                        f"{bot_name(i)} could not register with the plain UDP forwarder "
                        f"within {JOIN_TIMEOUT_S:g} s"
                    )
            join_s = time.monotonic() - joining
            duration, errors = drive(config, recorder, bots, display, _plain_drain(config))
    finally:
        for bot in bots:
            bot.close()
        stop.set()
        relay.join(timeout=2.0)
    numbers = [bot.link_numbers() for bot in bots]
    none: list[int | None] = [None] * config.members
    result = verdicts("plain-udp", config, recorder, numbers, none, duration, errors)
    return replace(result, join_s=join_s)


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
